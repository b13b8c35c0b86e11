//! `spawn_app()`: a fresh gateway on a random port, with fresh state, on either backend.

use std::time::Duration;

use maas::{Config, Gateway};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Embedded,
    Aws,
}

pub struct TestApp {
    pub url: String,
    pub system_key: String,
    pub client: reqwest::Client,
    _gateway: Gateway,
    _dir: tempfile::TempDir,
}

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "Fresh-Adm1n-Passphrase";

pub fn config(backend: Backend, dir: &std::path::Path) -> Config {
    let mut c = Config {
        addr: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        store: "embedded".into(),
        table: String::new(),
        bucket: String::new(),
        body_limit: maas_functions::config::DEFAULT_BODY_LIMIT,
        sidecar_url: None,
        sidecar_secret: None,
        sidecar_queue: 256,
        idle_timeout_secs: 30,
        training: maas_sidecar::TrainingArgs::default(),
        llm: maas_sidecar::llm::engine::LlmArgs::default(),
        system_key: Some(format!("system-{}", uuid::Uuid::new_v4())),
        identity: maas_functions::config::IdentityArgs {
            jwt_keys: None,
            access_ttl: 900,
            rate_auth: "1000/60".parse().unwrap(),
            rate_inference: "1000/60".parse().unwrap(),
            rate_training: "1000/60".parse().unwrap(),
            rate_other: "1000/60".parse().unwrap(),
            rate_ip: "10000/60".parse().unwrap(),
            monthly_calls: 1_000_000,
            admin_username: "root".into(),
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(ADMIN_PASSWORD.into()),
            oauth_providers: None,
            ..Default::default()
        },
    };
    if let Backend::Aws = backend {
        assert!(
            std::env::var("AWS_ENDPOINT_URL").is_ok(),
            "AWS_ENDPOINT_URL is not set: run `eval \"$(localstack/up)\"` first"
        );
        let id = uuid::Uuid::new_v4().simple().to_string();
        c.store = "aws".into();
        c.table = format!("e2e-{id}");
        c.bucket = format!("e2e-{}", &id[..24]);
    }
    c
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(backend, dir.path());
    tweak(&mut cfg);
    if cfg.store == "aws" {
        let conf = maas_store::aws::sdk_config().await;
        maas_store::aws::provision(&conf, &cfg.table, &cfg.bucket)
            .await
            .unwrap();
    }
    let gateway = Gateway::start(cfg).await.expect("gateway starts");
    let app = TestApp {
        url: format!("http://{}", gateway.addr),
        system_key: gateway.system_key.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
        _gateway: gateway,
        _dir: dir,
    };
    app.wait_healthy().await;
    app
}

/// Credentials of one SGT user.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub key: String,
}

impl User {
    pub fn creds(&self) -> Value {
        json!({"secret_id": self.id, "secret_key": self.key})
    }

    /// The user's credentials merged with `extra`.
    pub fn with(&self, extra: Value) -> Value {
        let mut v = self.creds();
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    }
}

impl TestApp {
    /// The SGT records behind the API, for checks the API cannot show (training jobs).
    pub fn repo(&self) -> maas_store::records::sgt::SgtRepo {
        maas_store::records::sgt::SgtRepo::new(&self._gateway.stores)
    }

    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub async fn wait_healthy(&self) {
        for _ in 0..100 {
            if let Ok(r) = self.client.get(format!("{}/health", self.url)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway never became healthy");
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} answered non-JSON {status}: {text:?}"));
        (status, value)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(path, serde_json::to_vec(&body).unwrap()).await
    }

    /// Posts and expects 200; returns the result.
    pub async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, value) = self.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {value}");
        value
    }

    /// Posts and expects the documented failure: 400 with this exception.
    pub async fn fails(&self, path: &str, body: Value, exception: &str) -> String {
        let (status, value) = self.post(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {value}");
        assert_eq!(value["exception"], exception, "{path}: {value}");
        assert_eq!(
            value.as_object().unwrap().len(),
            2,
            "only exception and message: {value}"
        );
        value["message"].as_str().unwrap().to_string()
    }

    pub async fn new_user(&self) -> User {
        let user = User {
            id: format!("user-{}", uuid::Uuid::new_v4()),
            key: format!("key-{}", uuid::Uuid::new_v4()),
        };
        self.ok(
            "/sgt/private/update_auth_token",
            json!({"key": self.system_key, "secret_id": user.id, "secret_key": user.key, "doc": "test", "end_time": "2099-01-01 00:00:00"}),
        )
        .await;
        user
    }

    pub async fn create_model(&self, user: &User, app: &str, name: &str, in_size: u32, out_size: u32, public: bool) {
        let body = user.with(json!({
            "name": name, "app_name": app, "model_type": "std", "client_data": "cd",
            "in_size": in_size, "out_size": out_size, "is_public": public
        }));
        assert_eq!(self.ok("/sgt/public/create_sgt_model", body).await, Value::Null);
    }

    pub async fn run(&self, user: &User, app: &str, name: &str, data: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let v = self
            .ok(
                "/sgt/public/run_sgt_model",
                user.with(json!({"name": name, "app_name": app, "data": data})),
            )
            .await;
        serde_json::from_value(v).unwrap()
    }

    pub async fn my_models(&self, user: &User) -> Vec<Value> {
        serde_json::from_value(self.ok("/sgt/public/read_my_sgt_model", user.creds()).await).unwrap()
    }
}

/// Runs each listed test against both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::support::Backend::Embedded).await } )*
        }
        mod aws {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::support::Backend::Aws).await } )*
        }
    };
}

pub use crate::fixtures::rows;
