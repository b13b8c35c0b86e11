//! What the records do when the backend misbehaves: endless write contention and failing blob
//! deletes, injected around a real store (embedded, and the local AWS endpoint). Each test checks that nothing already
//! stored is lost or half-written, and that the caller is told the truth.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use maas_store::blobs::Blobs;
use maas_store::records::sgt::{AppendError, ClientData, SgtModel, SgtRepo};
use maas_store::records::training::TrainJob;
use maas_store::{Item, Key, Query, StoreError, StoreResult, Table, Write};

#[macro_use]
mod common;
use common::Backend;

on_both_backends!(
    a_model_that_never_stops_changing_is_left_whole_when_its_delete_gives_up,
    a_delete_whose_cleanup_fails_still_deletes_the_model_and_says_so,
    an_upload_that_loses_every_race_is_an_error_not_a_missing_model_and_stores_nothing,
    an_update_that_loses_every_race_changes_nothing,
);

/// Switches that turn the real store's answers into failures.
#[derive(Default)]
struct Switches {
    /// Every versioned write loses its race, as if another writer always got there first.
    contend: AtomicBool,
    /// Every blob delete fails, as S3 does when it is unreachable.
    fail_blob_deletes: AtomicBool,
}

struct FaultyTable {
    inner: Arc<dyn Table>,
    switches: Arc<Switches>,
}

#[async_trait]
impl Table for FaultyTable {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.inner.get(key).await
    }
    async fn query(&self, query: &Query) -> StoreResult<Vec<Item>> {
        self.inner.query(query).await
    }
    async fn write(&self, writes: Vec<Write>) -> StoreResult<()> {
        if self.switches.contend.load(Ordering::SeqCst) {
            return Err(StoreError::ConditionFailed);
        }
        self.inner.write(writes).await
    }
    async fn add(&self, key: &Key, counter: &str, by: i64, ttl: Option<i64>) -> StoreResult<i64> {
        self.inner.add(key, counter, by, ttl).await
    }
}

struct FaultyBlobs {
    inner: Arc<dyn Blobs>,
    switches: Arc<Switches>,
}

#[async_trait]
impl Blobs for FaultyBlobs {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        if self.switches.fail_blob_deletes.load(Ordering::SeqCst) {
            return Err(StoreError::backend("injected: blob store unreachable"));
        }
        self.inner.delete(key).await
    }
    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        self.inner.copy(from, to).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        self.inner.size(key).await
    }
    async fn get_range(&self, key: &str, start: u64, len: u64) -> StoreResult<Option<Bytes>> {
        self.inner.get_range(key, start, len).await
    }
    async fn create_upload(&self, key: &str) -> StoreResult<String> {
        self.inner.create_upload(key).await
    }
    async fn put_part(&self, key: &str, upload: &str, part: u32, data: Bytes) -> StoreResult<String> {
        self.inner.put_part(key, upload, part, data).await
    }
    async fn complete_upload(&self, key: &str, upload: &str, parts: &[maas_store::blobs::Part]) -> StoreResult<()> {
        self.inner.complete_upload(key, upload, parts).await
    }
    async fn abort_upload(&self, key: &str, upload: &str) -> StoreResult<()> {
        self.inner.abort_upload(key, upload).await
    }
}

struct Harness {
    /// Records over the faulty backend: what the code under test uses.
    repo: SgtRepo,
    /// Records over the same store without faults: what is really stored.
    truth: SgtRepo,
    switches: Arc<Switches>,
    _backend: Backend,
}

/// `backend`, holding alice's model `app/net`, with every fault switched off.
async fn harness(backend: Backend) -> Harness {
    let stores = &backend.stores;
    let switches = Arc::new(Switches::default());
    let repo = SgtRepo {
        table: Arc::new(FaultyTable {
            inner: stores.table.clone(),
            switches: switches.clone(),
        }),
        blobs: Arc::new(FaultyBlobs {
            inner: stores.blobs.clone(),
            switches: switches.clone(),
        }),
    };
    repo.create_model(&model()).await.unwrap();
    Harness {
        repo,
        truth: SgtRepo::new(stores),
        switches,
        _backend: backend,
    }
}

fn model() -> SgtModel {
    SgtModel {
        model_id: "m1".into(),
        owner: "alice".into(),
        app_name: "app".into(),
        name: "net".into(),
        model_type: "std".into(),
        client_data: ClientData::string("before"),
        in_size: 2,
        out_size: 1,
        is_public: false,
        seed: 7,
        created_at: 0,
        checkpoint: None,
        data_version: 0,
        samples: 0,
        ver: 0,
    }
}

impl Harness {
    /// Two inputs and one label, as little-endian f32.
    async fn upload_one_sample(&self) -> Result<SgtModel, AppendError> {
        let sample: Vec<u8> = [1.0f32, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        self.repo
            .append_train_data("alice", "app", "net", 1, sample.into())
            .await
    }

    async fn stored(&self) -> Option<SgtModel> {
        self.truth.get_model("alice", "app", "net").await.unwrap()
    }

    async fn job_exists(&self) -> bool {
        self.truth
            .get::<TrainJob>(&TrainJob::key_for("m1"))
            .await
            .unwrap()
            .is_some()
    }

    async fn blobs_left(&self) -> usize {
        self.truth.blobs.list("sgt/m1/").await.unwrap().len()
    }
}

async fn a_model_that_never_stops_changing_is_left_whole_when_its_delete_gives_up(b: Backend) {
    let h = harness(b).await;
    h.upload_one_sample().await.unwrap();
    let before = h.stored().await;

    h.switches.contend.store(true, Ordering::SeqCst);
    let result = h.repo.delete_model("alice", "app", "net").await;

    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
    assert_eq!(h.stored().await, before, "the model must survive a delete that gave up");
    assert!(h.job_exists().await);
    assert_eq!(h.blobs_left().await, 1, "its data must stay");
}

async fn a_delete_whose_cleanup_fails_still_deletes_the_model_and_says_so(b: Backend) {
    let h = harness(b).await;
    h.upload_one_sample().await.unwrap();

    h.switches.fail_blob_deletes.store(true, Ordering::SeqCst);
    let deleted = h.repo.delete_model("alice", "app", "net").await.unwrap();

    assert_eq!(deleted.map(|m| m.model_id), Some("m1".into()));
    assert_eq!(h.stored().await, None, "the model is gone for its owner");
    assert!(!h.job_exists().await);
    // What is left is unreachable: keyed by the dead model's id, which no new model gets.
    assert_eq!(h.blobs_left().await, 1);
    assert!(h.repo.delete_model("alice", "app", "net").await.unwrap().is_none());
}

async fn an_upload_that_loses_every_race_is_an_error_not_a_missing_model_and_stores_nothing(b: Backend) {
    let h = harness(b).await;
    let before = h.stored().await;

    h.switches.contend.store(true, Ordering::SeqCst);
    let result = h.upload_one_sample().await;

    assert!(
        matches!(result, Err(AppendError::Store(StoreError::Backend(_)))),
        "{result:?}"
    );
    assert_eq!(h.stored().await, before, "no data version or sample count was added");
    assert_eq!(h.blobs_left().await, 0, "no stray blob");
    assert!(!h.job_exists().await);
}

async fn an_update_that_loses_every_race_changes_nothing(b: Backend) {
    let h = harness(b).await;

    h.switches.contend.store(true, Ordering::SeqCst);
    let key = SgtModel::key_for("alice", "app", "net");
    let result = h
        .repo
        .update_model(&key, |m| m.client_data = ClientData::string("after"))
        .await;

    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
    assert_eq!(h.stored().await.unwrap().client_data, ClientData::string("before"));
}
