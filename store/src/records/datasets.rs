//! Datasets: a user's uploaded training data. A dataset lives under its owner
//! (`DATASETS#{owner}` / `DATASET#{id}`), so listing is one query and another user's id is
//! missing. Its file is one blob; what validation found (samples, fields, errors, a preview) is
//! on the record. Status runs `uploading` -> `validating` -> `ready` or `failed`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{from_item, to_item, Record};
use crate::error::StoreResult;
use crate::item::Key;
use crate::keys::part;
use crate::table::{Cond, Query, Table, Write};
use crate::Stores;

/// One invalid record of a file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Dataset {
    pub dataset_id: String,
    pub owner: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// What the samples are: `instruction`, `conversation`, `text`, `classification`, ...
    pub kind: String,
    /// `json`, `jsonl` or `csv`.
    pub format: String,
    pub status: String,
    pub blob: String,
    /// Bytes: declared while uploading, then as found.
    pub size: u64,
    /// Hex sha256: declared while uploading, then as found.
    #[serde(default)]
    pub sha256: String,
    /// The multipart upload while the file is uploading.
    #[serde(default)]
    pub upload: Option<String>,
    #[serde(default)]
    pub part_size: u64,
    #[serde(default)]
    pub samples_count: u64,
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default)]
    pub errors: Vec<LineError>,
    #[serde(default)]
    pub error_count: u64,
    /// Why it failed, in one line.
    #[serde(default)]
    pub error: Option<String>,
    /// The first records.
    #[serde(default)]
    pub preview: Vec<Value>,
    #[serde(default)]
    pub project_id: Option<String>,
    /// The validation task, for an upload validated in the background.
    #[serde(default)]
    pub task_id: Option<String>,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// Epoch seconds when an unfinished upload stops being accepted.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Epoch seconds when an abandoned upload's record goes.
    #[serde(default)]
    pub ttl: Option<i64>,
    #[serde(default)]
    pub ver: u64,
}

impl Dataset {
    pub fn key_for(owner: &str, id: &str) -> Key {
        Key::new(format!("DATASETS#{}", part(owner)), format!("DATASET#{}", part(id)))
    }

    /// The dataset as validation found its file: `ready` with its samples, fields and a
    /// preview, or `failed` with the errors. A file whose size (or sha256, when one was
    /// declared) is not what the record says fails too.
    pub fn validated(&self, s: &maas_datasets::Summary) -> Dataset {
        let problem = if s.bytes != self.size {
            Some(format!(
                "the file has {} bytes, not the {} declared",
                s.bytes, self.size
            ))
        } else if !self.sha256.is_empty() && s.sha256 != self.sha256 {
            Some(format!("the file's sha256 is {}, not the one declared", s.sha256))
        } else {
            s.problem()
        };
        Dataset {
            status: if problem.is_some() { "failed" } else { "ready" }.into(),
            size: s.bytes,
            sha256: s.sha256.clone(),
            upload: None,
            part_size: 0,
            samples_count: s.samples,
            fields: s.fields.clone(),
            errors: s
                .errors
                .iter()
                .map(|e| LineError {
                    line: e.line,
                    message: e.message.clone(),
                })
                .collect(),
            error_count: s.error_count,
            error: problem,
            preview: s.preview.iter().cloned().map(Value::Object).collect(),
            expires_at: None,
            ttl: None,
            ..self.clone()
        }
    }

    /// The dataset failed for `why`, without a summary of its file.
    pub fn failed(&self, why: &str) -> Dataset {
        Dataset {
            status: "failed".into(),
            error: Some(why.into()),
            upload: None,
            expires_at: None,
            ttl: None,
            ..self.clone()
        }
    }

    /// The write that replaces `self`, as read, with `next`.
    pub fn replaced_by(&self, next: &Dataset) -> StoreResult<Write> {
        let mut next = next.clone();
        next.ver = self.ver + 1;
        next.updated_at = crate::now_millis();
        Ok(Write::Put {
            item: to_item(&next)?,
            cond: Cond::Version(self.ver),
        })
    }
}

impl Record for Dataset {
    fn key(&self) -> Key {
        Dataset::key_for(&self.owner, &self.dataset_id)
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

#[derive(Clone)]
pub struct DatasetRepo {
    table: Arc<dyn Table>,
}

impl DatasetRepo {
    pub fn new(stores: &Stores) -> Self {
        DatasetRepo {
            table: stores.table.clone(),
        }
    }

    pub async fn get(&self, owner: &str, id: &str) -> StoreResult<Option<Dataset>> {
        self.table
            .get(&Dataset::key_for(owner, id))
            .await?
            .map(from_item)
            .transpose()
    }

    /// The owner's datasets, oldest first (ids are time-ordered).
    pub async fn list(&self, owner: &str) -> StoreResult<Vec<Dataset>> {
        let q = Query::primary(format!("DATASETS#{}", part(owner)), "DATASET#");
        self.table.query(&q).await?.into_iter().map(from_item).collect()
    }

    /// Creates the dataset, with more writes (its validation task) in the same transaction.
    pub async fn create(&self, d: &Dataset, more: Vec<Write>) -> StoreResult<()> {
        let mut writes = vec![Write::Put {
            item: to_item(d)?,
            cond: Cond::NotExists,
        }];
        writes.extend(more);
        self.table.write(writes).await
    }

    /// Replaces `old` with `next` (and `more` in the same transaction); `ConditionFailed` if
    /// `old` changed meanwhile.
    pub async fn update(&self, old: &Dataset, next: &Dataset, more: Vec<Write>) -> StoreResult<Dataset> {
        let write = old.replaced_by(next)?;
        let Write::Put { item, .. } = &write else {
            unreachable!("replaced_by puts")
        };
        let stored: Dataset = from_item(item.clone())?;
        let mut writes = vec![write];
        writes.extend(more);
        self.table.write(writes).await?;
        Ok(stored)
    }

    pub async fn delete(&self, d: &Dataset) -> StoreResult<()> {
        self.table.delete(d.key(), Cond::Version(d.ver)).await
    }
}

/// One file of a version: the whole dataset, or one split of a processed one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionFile {
    /// `all`, `train`, `validation` or `test`.
    pub split: String,
    pub blob: String,
    pub samples: u64,
    pub size: u64,
}

/// An immutable version of a dataset (seed 002 版本管理): a snapshot of its file, or the
/// splits processing wrote. Jobs refer to a version, so what they read never changes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatasetVersion {
    pub version_id: String,
    pub owner: String,
    pub dataset_id: String,
    /// Unique per dataset: `v1`, `v2`, ... unless the caller names it.
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// `processing`, `ready` or `failed`.
    pub status: String,
    /// The files' format.
    pub format: String,
    #[serde(default)]
    pub files: Vec<VersionFile>,
    #[serde(default)]
    pub samples_count: u64,
    #[serde(default)]
    pub fields: Vec<String>,
    /// How processing made it (ratios, template, seed), if it did.
    #[serde(default)]
    pub processing: Option<Value>,
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    pub created_at: i64,
    #[serde(default)]
    pub ver: u64,
}

impl DatasetVersion {
    /// Bytes of files of its own (a snapshot shares its dataset's file).
    pub fn own_bytes(&self) -> u64 {
        self.files.iter().filter(|f| f.split != "all").map(|f| f.size).sum()
    }
}

impl Record for DatasetVersion {
    fn key(&self) -> Key {
        Key::new(
            format!("DATASETS#{}", part(&self.owner)),
            format!("DSVERSION#{}#{}", part(&self.dataset_id), part(&self.version)),
        )
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

impl DatasetRepo {
    /// The owner's versions (of `dataset_id` only, when given), oldest first per dataset.
    pub async fn versions(&self, owner: &str, dataset_id: Option<&str>) -> StoreResult<Vec<DatasetVersion>> {
        let prefix = match dataset_id {
            Some(d) => format!("DSVERSION#{}#", part(d)),
            None => "DSVERSION#".into(),
        };
        let q = Query::primary(format!("DATASETS#{}", part(owner)), prefix);
        self.table.query(&q).await?.into_iter().map(from_item).collect()
    }

    /// One of the owner's versions by id.
    pub async fn version(&self, owner: &str, version_id: &str) -> StoreResult<Option<DatasetVersion>> {
        Ok(self
            .versions(owner, None)
            .await?
            .into_iter()
            .find(|v| v.version_id == version_id))
    }

    /// Creates a version, with `more` in the same transaction; `ConditionFailed` when the
    /// dataset has a version of that name already.
    pub async fn create_version(&self, v: &DatasetVersion, more: Vec<Write>) -> StoreResult<()> {
        let mut writes = vec![Write::Put {
            item: to_item(v)?,
            cond: Cond::NotExists,
        }];
        writes.extend(more);
        self.table.write(writes).await
    }

    /// The write that replaces version `old` with `next`.
    pub fn version_replaced(&self, old: &DatasetVersion, next: &DatasetVersion) -> StoreResult<Write> {
        let mut next = next.clone();
        next.ver = old.ver + 1;
        Ok(Write::Put {
            item: to_item(&next)?,
            cond: Cond::Version(old.ver),
        })
    }

    pub async fn delete_version(&self, v: &DatasetVersion) -> StoreResult<()> {
        self.table.delete(v.key(), Cond::Version(v.ver)).await
    }
}

/// The files a job reads: a ready dataset's one file, or a ready version's files.
#[derive(Clone, Debug)]
pub struct Source {
    pub dataset: Dataset,
    pub version: Option<DatasetVersion>,
    /// `(split name, or None for a whole dataset; blob; size; format)`.
    pub files: Vec<(Option<String>, String, u64, String)>,
}

impl DatasetRepo {
    /// What `dataset_id` (or its version `version_id`) holds, when it is ready.
    pub async fn source(&self, owner: &str, dataset_id: &str, version_id: Option<&str>) -> StoreResult<Option<Source>> {
        let Some(dataset) = self.get(owner, dataset_id).await?.filter(|d| d.status == "ready") else {
            return Ok(None);
        };
        let Some(id) = version_id else {
            let files = vec![(None, dataset.blob.clone(), dataset.size, dataset.format.clone())];
            return Ok(Some(Source {
                dataset,
                version: None,
                files,
            }));
        };
        let Some(v) = self
            .version(owner, id)
            .await?
            .filter(|v| v.status == "ready" && v.dataset_id == dataset_id)
        else {
            return Ok(None);
        };
        let files = v
            .files
            .iter()
            .map(|f| {
                let split = (f.split != "all").then(|| f.split.clone());
                (split, f.blob.clone(), f.size, v.format.clone())
            })
            .collect();
        Ok(Some(Source {
            dataset,
            version: Some(v),
            files,
        }))
    }
}
