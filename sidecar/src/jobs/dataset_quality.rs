//! `dataset_quality` (seed 002 `/datasets/quality/check`): reads every record of a dataset,
//! or of each split of a version, and reports what [`maas_datasets::quality`] finds, with
//! token lengths counted by the model the caller named. The report is the task's result.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use maas_datasets::quality::{Checker, Tokens};
use maas_datasets::Format;
use maas_sidecar_client::llm::GenerateError;
use maas_store::records::datasets::DatasetRepo;
use maas_store::records::tasks::{Task, TaskStatus};
use maas_store::table::Write;
use maas_store::{Blobs, Stores};
use serde_json::{json, Value};

use super::blob_reader::BlobReader;
use super::{Ctx, Failure, Finish, Job};
use crate::llm::service::{LlmService, TokenCounter};

pub const KIND: &str = "dataset_quality";

pub struct DatasetQuality {
    datasets: DatasetRepo,
    blobs: Arc<dyn Blobs>,
    llm: Arc<LlmService>,
}

impl DatasetQuality {
    pub fn new(stores: &Stores, llm: Arc<LlmService>) -> Self {
        DatasetQuality {
            datasets: DatasetRepo::new(stores),
            blobs: stores.blobs.clone(),
            llm,
        }
    }

    /// Waits (at most five minutes) for a model loading from the bucket; its tokenizer.
    async fn counter(&self, model: &str) -> Result<Result<TokenCounter, String>, Failure> {
        for _ in 0..300 {
            match self.llm.token_counter(model) {
                Ok(c) => return Ok(Ok(c)),
                Err(GenerateError::Loading) => tokio::time::sleep(Duration::from_secs(1)).await,
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        Ok(Err(format!("the model {model:?} did not load within five minutes")))
    }
}

#[async_trait]
impl Job for DatasetQuality {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, ctx: &Ctx) -> Result<Finish, Failure> {
        let input = &ctx.task.input;
        let text = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
        let (dataset_id, version_id, model) = (
            text("dataset_id").unwrap_or_default(),
            text("version_id"),
            text("model"),
        );
        let Some(source) = self
            .datasets
            .source(&ctx.task.owner, &dataset_id, version_id.as_deref())
            .await?
        else {
            return Ok(Finish::failed("the dataset or version was deleted or is not ready"));
        };
        let counter = match &model {
            Some(m) => match self.counter(m).await? {
                Ok(c) => Some((m.clone(), c)),
                Err(why) => return Ok(Finish::failed(why)),
            },
            None => None,
        };
        let total: u64 = source.files.iter().map(|f| f.2).sum::<u64>().max(1);
        let readers: Vec<_> = source
            .files
            .iter()
            .map(|(split, blob, size, format)| {
                let reader = BlobReader::open(self.blobs.clone(), blob.clone(), *size, ctx.cancel_flag());
                (
                    split.clone(),
                    Format::parse(format).unwrap_or(Format::Jsonl),
                    *size,
                    reader,
                )
            })
            .collect();
        ctx.log("info", &format!("checking {} file(s), {total} bytes", readers.len()))
            .await;
        let (kind, progress) = (source.dataset.kind.clone(), ctx.progress());
        let report = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut count = |text: &str| match &counter {
                Some((_, c)) => c.count(text).unwrap_or(0) as u64,
                None => 0,
            };
            let tokens = counter.as_ref().map(|(m, c)| Tokens {
                model: m.clone(),
                context: c.context() as u64,
                count: &mut count,
            });
            let mut checker = Checker::new(&kind, tokens);
            let mut before = 0u64;
            for (i, (split, format, size, reader)) in readers.into_iter().enumerate() {
                maas_datasets::rows(format, reader, &mut |item| {
                    checker.feed((i as u8, split.as_deref()), item);
                    true
                })?;
                before += size;
                progress.set(before as f64 * 100.0 / total as f64);
            }
            Ok(checker.report())
        })
        .await??;
        ctx.log(
            "info",
            &format!("{} samples checked, score {}", report.samples_checked, report.score),
        )
        .await;
        let mut result = serde_json::to_value(&report)?;
        result["dataset_id"] = json!(dataset_id);
        result["version_id"] = json!(version_id);
        Ok(Finish {
            status: TaskStatus::Completed,
            result,
            error: None,
            writes: Vec::new(),
        })
    }

    async fn abandon(&self, _task: &Task, _reason: &str) -> Result<Vec<Write>, Failure> {
        Ok(Vec::new())
    }
}
