//! `dataset_processing` (seed 004 `/datasets/process`): deals a ready dataset's records into
//! train, validation and test splits of exact sizes from a seed, renders the prompt template
//! into each record's `text`, and writes the splits as JSONL files of a new version. The
//! version turns `ready` in the transaction that ends the task; a run cut short leaves only
//! files at the version's own keys, which a rerun overwrites and an abandoned task deletes.

use std::sync::Arc;

use async_trait::async_trait;
use maas_datasets::{split_sizes, Format, Item, Splitter, Template};
use maas_store::records::datasets::{DatasetRepo, DatasetVersion, VersionFile};
use maas_store::records::storage::StorageRepo;
use maas_store::records::tasks::{Task, TaskStatus};
use maas_store::table::Write;
use maas_store::{Blobs, Stores};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::blob_reader::BlobReader;
use super::blob_writer::BlobWriter;
use super::{Ctx, Failure, Finish, Job};

pub const KIND: &str = "dataset_processing";
pub const SPLITS: [&str; 3] = ["train", "validation", "test"];

/// What the API checked and put in the task.
#[derive(Deserialize)]
struct Input {
    dataset_id: String,
    ratios: [f64; 3],
    template: Option<String>,
    seed: u64,
}

pub struct DatasetProcessing {
    datasets: DatasetRepo,
    blobs: Arc<dyn Blobs>,
    storage: StorageRepo,
}

impl DatasetProcessing {
    pub fn new(stores: &Stores) -> Self {
        DatasetProcessing {
            datasets: DatasetRepo::new(stores),
            blobs: stores.blobs.clone(),
            storage: StorageRepo::new(stores),
        }
    }

    /// The version the task fills, while it is still being processed.
    async fn version(&self, task: &Task) -> Result<Option<DatasetVersion>, Failure> {
        let id = task.input.get("version_id").and_then(Value::as_str).unwrap_or_default();
        Ok(self
            .datasets
            .version(&task.owner, id)
            .await?
            .filter(|v| v.status == "processing"))
    }
}

/// Where a version's split lives.
pub fn split_blob(dataset_id: &str, version_id: &str, split: &str) -> String {
    format!("datasets/{dataset_id}/versions/{version_id}/{split}.jsonl")
}

impl DatasetProcessing {
    /// Ends the task failed: the version says why, and its files go.
    async fn fail(&self, v: &DatasetVersion, why: &str) -> Result<Finish, Failure> {
        for split in SPLITS {
            self.blobs
                .delete(&split_blob(&v.dataset_id, &v.version_id, split))
                .await?;
        }
        let failed = DatasetVersion {
            status: "failed".into(),
            error: Some(why.into()),
            ..v.clone()
        };
        Ok(Finish {
            writes: vec![self.datasets.version_replaced(v, &failed)?],
            ..Finish::failed(why)
        })
    }
}

#[async_trait]
impl Job for DatasetProcessing {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, ctx: &Ctx) -> Result<Finish, Failure> {
        let input: Input = serde_json::from_value(ctx.task.input.clone())?;
        let Some(version) = self.version(&ctx.task).await? else {
            return Ok(Finish::failed("the version was deleted or is not being processed"));
        };
        let dataset = match self.datasets.get(&ctx.task.owner, &input.dataset_id).await? {
            Some(d) if d.status == "ready" => d,
            _ => return self.fail(&version, "the dataset was deleted or is not ready").await,
        };
        let format = Format::parse(&dataset.format).ok_or("unknown format")?;
        let template = input.template.as_deref().map(Template::parse).transpose()?;
        let adds_text = template.is_some();
        let sizes = split_sizes(dataset.samples_count, input.ratios);
        ctx.log(
            "info",
            &format!("dealing {} records into {sizes:?}", dataset.samples_count),
        )
        .await;

        // A blocking thread parses and deals; this task writes the three files.
        let reader = BlobReader::open(
            self.blobs.clone(),
            dataset.blob.clone(),
            dataset.size,
            ctx.cancel_flag(),
        );
        let (tx, mut rx) = mpsc::channel::<(usize, Vec<u8>)>(1024);
        let (seed, total) = (input.seed, dataset.samples_count.max(1));
        let progress = ctx.progress();
        let dealer = tokio::task::spawn_blocking(move || {
            let mut splitter = Splitter::new(sizes, seed);
            let (mut done, mut bad) = (0u64, 0u64);
            maas_datasets::rows(format, reader, &mut |item| {
                let Item::Row(_, mut record) = item else {
                    bad += matches!(item, Item::Error(_)) as u64;
                    return true;
                };
                let Some(split) = splitter.next_split() else {
                    bad += 1;
                    return false;
                };
                if let Some(t) = &template {
                    record.insert("text".into(), Value::String(t.render(&record)));
                }
                let mut line = serde_json::to_vec(&record).expect("a record serialises");
                line.push(b'\n');
                done += 1;
                if done.is_multiple_of(1024) {
                    progress.set(done as f64 * 100.0 / total as f64);
                }
                tx.blocking_send((split, line)).is_ok()
            })
            .map(|()| (done, bad))
        });
        let mut writers: Vec<BlobWriter> = SPLITS
            .iter()
            .map(|s| {
                BlobWriter::new(
                    self.blobs.clone(),
                    split_blob(&dataset.dataset_id, &version.version_id, s),
                )
            })
            .collect();
        let mut counts = [0u64; 3];
        while let Some((split, line)) = rx.recv().await {
            counts[split] += 1;
            writers[split].write(&line).await?;
        }
        let (done, bad) = dealer.await??;
        if bad > 0 || done != dataset.samples_count {
            let why = format!(
                "the dataset's file changed: {done} records read, {bad} unreadable, {} expected",
                dataset.samples_count
            );
            return self.fail(&version, &why).await;
        }
        let mut files = Vec::new();
        for ((w, split), samples) in writers.into_iter().zip(SPLITS).zip(counts) {
            let blob = w.key.clone();
            let size = w.finish().await?;
            files.push(VersionFile {
                split: split.into(),
                blob,
                samples,
                size,
            });
        }
        let mut fields = dataset.fields.clone();
        if adds_text && !fields.iter().any(|f| f == "text") {
            fields.push("text".into());
        }
        let ready = DatasetVersion {
            status: "ready".into(),
            format: "jsonl".into(),
            files,
            samples_count: done,
            fields,
            ..version.clone()
        };
        Ok(Finish {
            status: TaskStatus::Completed,
            result: json!({
                "dataset_id": dataset.dataset_id,
                "version_id": version.version_id,
                "splits": {"train": counts[0], "validation": counts[1], "test": counts[2]},
                "size": ready.own_bytes(),
            }),
            error: None,
            writes: vec![self.datasets.version_replaced(&version, &ready)?],
        })
    }

    async fn abandon(&self, task: &Task, reason: &str) -> Result<Vec<Write>, Failure> {
        let Some(v) = self.version(task).await? else {
            return Ok(Vec::new());
        };
        Ok(self.fail(&v, &format!("processing {reason}")).await?.writes)
    }

    async fn finished(&self, task: &Task, end: &Finish) {
        super::count_storage(&self.storage, task, end).await;
    }
}
