//! `dataset_validation`: a dataset uploaded through presigned URLs is read once, as a stream,
//! to check its size, sha256 and format and to count its samples. The dataset turns `ready`,
//! or `failed` with up to 100 line-numbered errors (its file is then deleted), in the same
//! transaction that ends the task; a run cut short writes nothing, so a rerun starts clean.

use std::sync::Arc;

use async_trait::async_trait;
use maas_datasets::Format;
use maas_store::records::datasets::{Dataset, DatasetRepo};
use maas_store::records::storage::StorageRepo;
use maas_store::records::tasks::{Task, TaskStatus};
use maas_store::table::Write;
use maas_store::{Blobs, Stores};
use serde_json::{json, Value};

use super::blob_reader::BlobReader;
use super::{Ctx, Failure, Finish, Job};

pub const KIND: &str = "dataset_validation";

pub struct DatasetValidation {
    datasets: DatasetRepo,
    blobs: Arc<dyn Blobs>,
    storage: StorageRepo,
}

impl DatasetValidation {
    pub fn new(stores: &Stores) -> Self {
        DatasetValidation {
            datasets: DatasetRepo::new(stores),
            blobs: stores.blobs.clone(),
            storage: StorageRepo::new(stores),
        }
    }

    /// The dataset the task validates, if it still waits for validation.
    async fn subject(&self, task: &Task) -> Result<Option<Dataset>, Failure> {
        let id = task.input.get("dataset_id").and_then(Value::as_str).unwrap_or_default();
        Ok(self
            .datasets
            .get(&task.owner, id)
            .await?
            .filter(|d| d.status == "validating"))
    }
}

#[async_trait]
impl Job for DatasetValidation {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, ctx: &Ctx) -> Result<Finish, Failure> {
        let Some(d) = self.subject(&ctx.task).await? else {
            return Ok(Finish::failed(
                "the dataset was deleted or is not waiting for validation",
            ));
        };
        let Some(format) = Format::parse(&d.format) else {
            return Ok(Finish::failed(format!("unknown format {}", d.format)));
        };
        let found = self.blobs.size(&d.blob).await?.unwrap_or(0);
        ctx.log("info", &format!("reading {found} bytes of {}", d.format)).await;
        let reader = BlobReader::open(self.blobs.clone(), d.blob.clone(), found, ctx.cancel_flag());
        let total = found.max(1) as f64;
        let progress = ctx.progress();
        let summary = tokio::task::spawn_blocking(move || {
            maas_datasets::validate(format, reader, &mut |n| progress.set(n as f64 * 100.0 / total))
        })
        .await??;
        let next = d.validated(&summary);
        ctx.log(
            "info",
            &format!(
                "{} samples, {} invalid, fields: {}",
                summary.samples,
                summary.error_count,
                summary.fields.join(", ")
            ),
        )
        .await;
        let result = json!({
            "dataset_id": d.dataset_id,
            "samples_count": summary.samples,
            "size": summary.bytes,
            "fields": summary.fields,
            "error_count": summary.error_count,
            "errors": next.errors.iter().take(10).collect::<Vec<_>>(),
        });
        if next.status == "failed" {
            // Nothing half-made stays: the record says why, and the bytes go.
            self.blobs.delete(&d.blob).await?;
        }
        Ok(Finish {
            status: if next.status == "ready" {
                TaskStatus::Completed
            } else {
                TaskStatus::Failed
            },
            error: next.error.clone(),
            result,
            writes: vec![d.replaced_by(&next)?],
        })
    }

    async fn abandon(&self, task: &Task, reason: &str) -> Result<Vec<Write>, Failure> {
        let Some(d) = self.subject(task).await? else {
            return Ok(Vec::new());
        };
        self.blobs.delete(&d.blob).await?;
        Ok(vec![d.replaced_by(&d.failed(&format!("validation {reason}")))?])
    }

    async fn finished(&self, task: &Task, end: &Finish) {
        super::count_storage(&self.storage, task, end).await;
    }
}
