//! The two backends every store test runs on: a fresh embedded store in a temporary directory,
//! and a fresh table and bucket on the local AWS endpoint.

use maas_store::aws;
use maas_store::{StoreConfig, Stores};

pub struct Backend {
    pub stores: Stores,
    _dir: Option<tempfile::TempDir>,
}

pub async fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(&StoreConfig::Embedded {
        dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    Backend {
        stores,
        _dir: Some(dir),
    }
}

/// A fresh table and bucket on the local AWS endpoint. The AWS half is not optional: without
/// an endpoint these tests fail and say how to start one.
pub async fn aws_backend() -> Backend {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run `eval \"$(localstack/up)\"` first"
    );
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (table, bucket) = (format!("contract-{id}"), format!("contract-{}", &id[..20]));
    let conf = aws::sdk_config().await;
    aws::provision(&conf, &table, &bucket).await.unwrap();
    let stores = Stores::open(&StoreConfig::Aws { table, bucket }).await.unwrap();
    Backend { stores, _dir: None }
}

/// Runs each named `async fn(Backend)` as two tests, `embedded_backend::NAME` and
/// `aws_backend::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded_backend { $( #[tokio::test] async fn $name() { super::$name($crate::common::embedded().await).await } )* }
        mod aws_backend { $( #[tokio::test] async fn $name() { super::$name($crate::common::aws_backend().await).await } )* }
    };
}
