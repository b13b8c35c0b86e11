//! `model_validation`: a model version uploaded through presigned URLs has its size and header
//! checked when the upload completes; this task reads every byte of each file to check the
//! sha256 the client declared, which can take minutes for 50 GB and so runs here, not in the
//! API. The version turns `ready` (and the model's latest, when it is the newest) or `failed`
//! with its files deleted. A rerun after a crash finds the version already decided and ends.

use std::sync::Arc;

use async_trait::async_trait;
use maas_datasets::Tally;
use maas_store::records::registry::{Model, ModelVersion, RegistryRepo};
use maas_store::records::storage::StorageRepo;
use maas_store::records::tasks::{Task, TaskStatus};
use maas_store::table::Write;
use maas_store::{Blobs, Stores};
use serde_json::{json, Value};

use super::blob_reader::BlobReader;
use super::{Ctx, Failure, Finish, Job};

pub const KIND: &str = "model_validation";

pub struct ModelValidation {
    registry: RegistryRepo,
    blobs: Arc<dyn Blobs>,
    storage: StorageRepo,
}

impl ModelValidation {
    pub fn new(stores: &Stores) -> Self {
        ModelValidation {
            registry: RegistryRepo::new(stores),
            blobs: stores.blobs.clone(),
            storage: StorageRepo::new(stores),
        }
    }

    async fn version(&self, task: &Task) -> Result<Option<ModelVersion>, Failure> {
        let text = |k: &str| {
            task.input
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(self.registry.version(&text("model_id"), &text("version")).await?)
    }

    /// The version failed for `why`: its files go, and the record says why.
    async fn fail(&self, v: &ModelVersion, why: &str) -> Result<(), Failure> {
        for f in &v.files {
            self.blobs.delete(&f.blob).await?;
        }
        let failed = ModelVersion {
            status: "failed".into(),
            error: Some(why.into()),
            ..v.clone()
        };
        self.registry.finish_version(v, &failed, Model::clone).await?;
        Ok(())
    }
}

#[async_trait]
impl Job for ModelValidation {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, ctx: &Ctx) -> Result<Finish, Failure> {
        let Some(v) = self.version(&ctx.task).await? else {
            return Ok(Finish::failed("the version was deleted"));
        };
        match v.status.as_str() {
            "validating" => {}
            // A run before this one decided, then stopped before ending the task.
            "ready" => return Ok(ready(&v)),
            s => return Ok(Finish::failed(format!("the version is {s}"))),
        }
        let total: u64 = v.files.iter().map(|f| f.size).sum::<u64>().max(1);
        let mut before = 0u64;
        for f in &v.files {
            ctx.log("info", &format!("hashing {} ({} bytes)", f.name, f.size)).await;
            let reader = BlobReader::open(self.blobs.clone(), f.blob.clone(), f.size, ctx.cancel_flag());
            let progress = ctx.progress();
            let (size, digest) = tokio::task::spawn_blocking(move || {
                let mut tally = Tally::new(reader);
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = std::io::Read::read(&mut tally, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    progress.set((before + tally.bytes()) as f64 * 100.0 / total as f64);
                }
                tally.finish()
            })
            .await??;
            before += size;
            if size != f.size || digest != f.sha256 {
                let why = format!("{}'s sha256 is {digest}, not the one declared", f.name);
                self.fail(&v, &why).await?;
                return Ok(Finish::failed(why));
            }
        }
        let done = ModelVersion {
            status: "ready".into(),
            ..v.clone()
        };
        let metadata = v.metadata.clone();
        self.registry
            .finish_version(&v, &done, |m| m.with_ready_version(&v.version, &metadata))
            .await?;
        Ok(ready(&done))
    }

    async fn abandon(&self, task: &Task, reason: &str) -> Result<Vec<Write>, Failure> {
        if let Some(v) = self.version(task).await?.filter(|v| v.status == "validating") {
            self.fail(&v, &format!("validation {reason}")).await?;
        }
        Ok(Vec::new())
    }

    async fn finished(&self, task: &Task, end: &Finish) {
        super::count_storage(&self.storage, task, end).await;
    }
}

fn ready(v: &ModelVersion) -> Finish {
    let size: u64 = v.files.iter().map(|f| f.size).sum();
    Finish {
        status: TaskStatus::Completed,
        result: json!({"model_id": v.model_id, "version": v.version, "size": size}),
        error: None,
        writes: Vec::new(),
    }
}
