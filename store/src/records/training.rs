//! Training data chunks and training jobs: the queue the sidecars share.
//!
//! A job is claimed with a conditional write that sets a lease (`lease_owner`, `lease_until_ms`);
//! the holder extends the lease with every checkpoint. A job whose lease ran out (its sidecar
//! died) is claimable again, and the new holder resumes from the model's last checkpoint.
//!
//! Training time is shared: a holder that sees other jobs waiting gives its job back
//! ([`SgtRepo::yield_job`]) after its turn, and workers take claimable jobs in the order they
//! started waiting, so every job gets a turn in round robin.

use serde::{Deserialize, Serialize};

use super::sgt::{Checkpoint, SgtModel, SgtRepo};
use super::{from_item, to_item, Record};
use crate::error::{StoreError, StoreResult};
use crate::item::Key;
use crate::table::{Cond, Query, Write};

/// One uploaded batch of samples; the data itself is a blob.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainChunk {
    pub model_id: String,
    pub seq: u64,
    pub blob: String,
    pub rows: u64,
    #[serde(default)]
    pub ver: u64,
}

pub fn chunk_prefix(model_id: &str) -> String {
    format!("SGTDATA#{model_id}")
}

impl Record for TrainChunk {
    fn key(&self) -> Key {
        Key::new(chunk_prefix(&self.model_id), format!("CHUNK#{:010}", self.seq))
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Running,
    Done,
}

/// The training job of one model (at most one per model).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainJob {
    pub model_id: String,
    pub owner: String,
    pub app_name: String,
    pub name: String,
    pub status: JobStatus,
    /// The model's data version this job must reach before it may finish.
    pub data_version: u64,
    #[serde(default)]
    pub lease_owner: Option<String>,
    #[serde(default)]
    pub lease_until_ms: i64,
    #[serde(default)]
    pub step: u64,
    #[serde(default)]
    pub loss: Option<f64>,
    /// When the job last became claimable (queued, or handed back after a turn), epoch ms;
    /// workers take the longest-waiting job first.
    #[serde(default)]
    pub waiting_since_ms: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub ver: u64,
}

pub const JOB_INDEX: &str = "SGTJOBS";

impl Record for TrainJob {
    fn key(&self) -> Key {
        TrainJob::key_for(&self.model_id)
    }
    fn gsi1(&self) -> Option<Key> {
        (self.status != JobStatus::Done).then(|| Key::new(JOB_INDEX, self.model_id.clone()))
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

impl TrainJob {
    pub fn key_for(model_id: &str) -> Key {
        Key::new(format!("SGTJOB#{model_id}"), "JOB")
    }

    pub fn model_key(&self) -> Key {
        SgtModel::key_for(&self.owner, &self.app_name, &self.name)
    }

    /// The write that (re)queues training after new data for `model`. A running job keeps its
    /// lease; its holder sees the new `data_version` at its next heartbeat.
    pub(crate) fn queued(existing: Option<TrainJob>, model: &SgtModel) -> Write {
        let now = crate::now_secs();
        match existing {
            Some(mut job) => {
                let cond = Cond::Version(job.ver);
                job.data_version = model.data_version;
                if job.status == JobStatus::Done {
                    job.status = JobStatus::Pending;
                    job.waiting_since_ms = crate::now_millis();
                }
                job.updated_at = now;
                job.ver += 1;
                Write::Put {
                    item: to_item(&job).expect("job serialises"),
                    cond,
                }
            }
            None => {
                let job = TrainJob {
                    model_id: model.model_id.clone(),
                    owner: model.owner.clone(),
                    app_name: model.app_name.clone(),
                    name: model.name.clone(),
                    status: JobStatus::Pending,
                    data_version: model.data_version,
                    lease_owner: None,
                    lease_until_ms: 0,
                    step: 0,
                    loss: None,
                    waiting_since_ms: crate::now_millis(),
                    updated_at: now,
                    ver: 0,
                };
                Write::Put {
                    item: to_item(&job).expect("job serialises"),
                    cond: Cond::NotExists,
                }
            }
        }
    }

    pub fn is_claimable(&self, now_ms: i64) -> bool {
        match self.status {
            JobStatus::Pending => true,
            JobStatus::Running => self.lease_until_ms < now_ms,
            JobStatus::Done => false,
        }
    }

    /// Since when the job has waited for a worker, epoch ms: a job whose holder died waited
    /// from when its lease ran out.
    pub fn waiting_since(&self) -> i64 {
        match self.status {
            JobStatus::Running => self.lease_until_ms,
            _ => self.waiting_since_ms,
        }
    }

    pub fn held_by(&self, worker: &str, now_ms: i64) -> bool {
        self.status == JobStatus::Running
            && self.lease_owner.as_deref() == Some(worker)
            && self.lease_until_ms >= now_ms
    }
}

/// What a job holder learns when it tries to extend its lease.
#[derive(Debug)]
pub enum LeaseError {
    /// Someone else holds the job now, or it (or its model) was deleted.
    Lost,
    Store(StoreError),
}

impl From<StoreError> for LeaseError {
    fn from(e: StoreError) -> Self {
        LeaseError::Store(e)
    }
}

impl SgtRepo {
    /// Jobs that are pending, or running under an expired lease, longest waiting first.
    pub async fn claimable_jobs(&self) -> StoreResult<Vec<TrainJob>> {
        let now = crate::now_millis();
        let items = self.table.query(&Query::gsi1(JOB_INDEX, "")).await?;
        let jobs: Vec<TrainJob> = items.into_iter().map(from_item).collect::<StoreResult<_>>()?;
        let mut claimable: Vec<TrainJob> = jobs.into_iter().filter(|j| j.is_claimable(now)).collect();
        claimable.sort_by_key(TrainJob::waiting_since);
        Ok(claimable)
    }

    /// Whether a job other than `own` has waited for a worker for at least `grace_ms`: long
    /// enough that an idle worker would have claimed it if there were one.
    pub async fn others_waiting(&self, own: &TrainJob, grace_ms: i64) -> StoreResult<bool> {
        let since = crate::now_millis() - grace_ms;
        Ok(self
            .claimable_jobs()
            .await?
            .iter()
            .any(|j| j.model_id != own.model_id && j.waiting_since() <= since))
    }

    /// Hands a held job back to the queue after its turn, keeping its progress: the model's
    /// checkpoint is where the next holder resumes, and uploads meanwhile join this job.
    pub async fn yield_job(&self, job: &TrainJob, worker: &str) -> Result<(), LeaseError> {
        for _ in 0..32 {
            let held = self.refresh_job(job, worker).await?;
            let mut waiting = held.clone();
            waiting.status = JobStatus::Pending;
            waiting.lease_owner = None;
            waiting.lease_until_ms = 0;
            waiting.waiting_since_ms = crate::now_millis();
            waiting.updated_at = crate::now_secs();
            waiting.ver += 1;
            match self.table.put(to_item(&waiting)?, Cond::Version(held.ver)).await {
                Ok(()) => return Ok(()),
                // New data arrived between the read and the write: read again.
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LeaseError::Store(StoreError::backend(
            "too much contention on a training job",
        )))
    }

    /// Takes the lease on `job`; `None` when another worker won the race.
    pub async fn claim_job(&self, job: &TrainJob, worker: &str, lease_ms: i64) -> StoreResult<Option<TrainJob>> {
        let mut claimed = job.clone();
        claimed.status = JobStatus::Running;
        claimed.lease_owner = Some(worker.to_string());
        claimed.lease_until_ms = crate::now_millis() + lease_ms;
        claimed.updated_at = crate::now_secs();
        claimed.ver = job.ver + 1;
        match self.table.put(to_item(&claimed)?, Cond::Version(job.ver)).await {
            Ok(()) => Ok(Some(claimed)),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Re-reads a held job, so its holder sees new data; `Lost` if the lease is gone.
    pub async fn refresh_job(&self, job: &TrainJob, worker: &str) -> Result<TrainJob, LeaseError> {
        match self.get::<TrainJob>(&job.key()).await? {
            Some(j) if j.held_by(worker, crate::now_millis()) => Ok(j),
            _ => Err(LeaseError::Lost),
        }
    }

    /// Extends the lease and records progress, optionally with a new checkpoint, in one
    /// transaction. Returns the updated job and model.
    pub async fn heartbeat(
        &self,
        job: &TrainJob,
        worker: &str,
        lease_ms: i64,
        progress: (u64, f64),
        checkpoint_blob: Option<String>,
    ) -> Result<(TrainJob, SgtModel), LeaseError> {
        let mut job = job.clone();
        for _ in 0..32 {
            let Some(mut model) = self.get::<SgtModel>(&job.model_key()).await? else {
                return Err(LeaseError::Lost);
            };
            if model.model_id != job.model_id {
                return Err(LeaseError::Lost);
            }
            let (job_ver, model_ver) = (job.ver, model.ver);
            let mut next = job.clone();
            (next.step, next.loss) = (progress.0, Some(progress.1));
            next.lease_until_ms = crate::now_millis() + lease_ms;
            next.updated_at = crate::now_secs();
            next.ver += 1;
            let mut writes = vec![Write::Put {
                item: to_item(&next)?,
                cond: Cond::Version(job_ver),
            }];
            if let Some(blob) = &checkpoint_blob {
                let version = model.checkpoint.as_ref().map_or(0, |c| c.version) + 1;
                model.checkpoint = Some(Checkpoint {
                    blob: blob.clone(),
                    step: progress.0,
                    loss: progress.1,
                    version,
                });
                model.ver += 1;
                writes.push(Write::Put {
                    item: to_item(&model)?,
                    cond: Cond::Version(model_ver),
                });
            }
            match self.table.write(writes).await {
                Ok(()) => return Ok((next, model)),
                // The job changed (new data) or the model changed (client data): re-read, retry.
                Err(StoreError::ConditionFailed) => job = self.refresh_job(&job, worker).await?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LeaseError::Store(StoreError::backend(
            "too much contention on a training job",
        )))
    }

    /// Marks the job done if no new data arrived meanwhile; `Ok(false)` means keep training.
    pub async fn finish_job(&self, job: &TrainJob, worker: &str, trained_version: u64) -> Result<bool, LeaseError> {
        let job = self.refresh_job(job, worker).await?;
        if job.data_version > trained_version {
            return Ok(false);
        }
        let mut done = job.clone();
        done.status = JobStatus::Done;
        done.lease_owner = None;
        done.lease_until_ms = 0;
        done.updated_at = crate::now_secs();
        done.ver += 1;
        match self.table.put(to_item(&done)?, Cond::Version(job.ver)).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// All training chunks of a model, in upload order, with their data.
    pub async fn load_train_data(&self, model_id: &str) -> StoreResult<Vec<(TrainChunk, bytes::Bytes)>> {
        let items = self
            .table
            .query(&Query::primary(chunk_prefix(model_id), "CHUNK#"))
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let chunk: TrainChunk = from_item(item)?;
            let data = self
                .blobs
                .get(&chunk.blob)
                .await?
                .ok_or_else(|| StoreError::Corrupt(chunk.blob.clone(), "training data blob missing".into()))?;
            out.push((chunk, data));
        }
        Ok(out)
    }
}
