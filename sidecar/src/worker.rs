//! The training loop of one sidecar: claim a job, train in time slices, checkpoint and extend
//! the lease after each slice, pick up new data, and finish when the loss is flat. When other
//! jobs wait, a job gives way after its turn and waits for its next one, so one big model never
//! holds back everyone else's small ones.

use std::sync::Arc;
use std::time::Duration;

use candle_core::{Device, Tensor};
use maas_store::records::sgt::{SgtModel, SgtRepo};
use maas_store::records::training::{LeaseError, TrainJob};

use crate::cache::ModelCache;
use crate::ensemble::{std_widths, Ensemble, MEMBERS};
use crate::train::{decode_checkpoint, TrainConfig, Trainer};

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// How often an idle worker looks for jobs.
    pub poll: Duration,
    /// How long a claim lasts without a heartbeat. A dead sidecar's job is resumed after this.
    pub lease: Duration,
    /// Training time between checkpoints (and heartbeats); must be well under `lease`.
    pub slice: Duration,
    /// How long a job trains before it gives way to jobs that wait; `None`: until it is done.
    /// A turn ends at the first checkpoint after this much time.
    pub turn: Option<Duration>,
    pub train: TrainConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            poll: Duration::from_millis(500),
            lease: Duration::from_secs(30),
            slice: Duration::from_secs(2),
            turn: Some(Duration::from_secs(2)),
            train: TrainConfig::default(),
        }
    }
}

/// The training flags `maas` and `maas-sidecar` share.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainingArgs {
    /// Seconds a training job's lease lasts without a heartbeat.
    #[arg(long, env = "MAAS_LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,
    /// Seconds of training between checkpoints (and lease heartbeats).
    #[arg(long, env = "MAAS_CHECKPOINT_SECS", default_value_t = 2.0)]
    pub checkpoint_secs: f64,
    /// Seconds a job trains while other jobs wait before it gives way to them (at its next
    /// checkpoint); 0 trains each job until it is done.
    #[arg(long, env = "MAAS_TRAIN_TURN_SECS", default_value_t = 2.0)]
    pub train_turn_secs: f64,
    /// Training stops once the loss improved by less than 2% over this many steps.
    #[arg(long, env = "MAAS_TRAIN_PATIENCE_STEPS", default_value_t = TrainConfig::default().window)]
    pub train_patience_steps: u64,
    /// Long tasks (dataset validation, quality checks, processing) this process runs at once;
    /// 0 leaves them to other sidecars.
    #[arg(long, env = "MAAS_TASK_WORKERS", default_value_t = 1)]
    pub task_workers: usize,
}

impl Default for TrainingArgs {
    fn default() -> Self {
        let w = WorkerConfig::default();
        TrainingArgs {
            lease_secs: w.lease.as_secs(),
            checkpoint_secs: w.slice.as_secs_f64(),
            train_turn_secs: w.turn.map_or(0.0, |t| t.as_secs_f64()),
            train_patience_steps: w.train.window,
            task_workers: 1,
        }
    }
}

impl TrainingArgs {
    pub fn worker_config(&self) -> WorkerConfig {
        let secs = |s: f64| Duration::from_secs_f64(s.clamp(0.05, 600.0));
        let mut w = WorkerConfig {
            lease: Duration::from_secs(self.lease_secs),
            slice: secs(self.checkpoint_secs),
            turn: (self.train_turn_secs > 0.0).then(|| secs(self.train_turn_secs)),
            ..WorkerConfig::default()
        };
        w.train.window = self.train_patience_steps.max(1);
        w
    }
}

pub struct Worker {
    pub id: String,
    pub repo: SgtRepo,
    pub cache: Arc<ModelCache>,
    pub device: Device,
    pub cfg: WorkerConfig,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

impl Worker {
    /// Runs until the task is dropped.
    pub async fn run(self) {
        loop {
            match self.next_job().await {
                Ok(Some(job)) => {
                    let model_id = job.model_id.clone();
                    if let Err(e) = self.train(job).await {
                        tracing::warn!(worker = %self.id, model_id, error = %e, "training stopped");
                    }
                }
                Ok(None) => tokio::time::sleep(self.cfg.poll).await,
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "cannot list training jobs");
                    tokio::time::sleep(self.cfg.poll).await;
                }
            }
        }
    }

    async fn next_job(&self) -> Result<Option<TrainJob>, Failure> {
        for job in self.repo.claimable_jobs().await? {
            if let Some(claimed) = self.repo.claim_job(&job, &self.id, self.lease_ms()).await? {
                return Ok(Some(claimed));
            }
        }
        Ok(None)
    }

    fn lease_ms(&self) -> i64 {
        self.cfg.lease.as_millis() as i64
    }

    /// Trains one claimed job until it is done, its lease is lost, or its model is gone.
    pub async fn train(&self, mut job: TrainJob) -> Result<(), Failure> {
        let Some(model) = self.repo.get::<SgtModel>(&job.model_key()).await? else {
            return Ok(());
        };
        if model.model_id != job.model_id {
            return Ok(());
        }
        tracing::info!(worker = %self.id, model_id = %model.model_id, step = model.checkpoint.as_ref().map_or(0, |c| c.step), "training");
        let (mut trained_version, x, y) = self.load_data(&model).await?;
        let mut trainer = self.trainer(&model, x, y).await?;
        let mut last_blob = model.checkpoint.map(|c| c.blob);
        let turn_started = std::time::Instant::now();
        loop {
            let slice = self.cfg.slice;
            let (back, progress) = tokio::task::spawn_blocking(move || {
                let p = trainer.train_for(slice);
                (trainer, p)
            })
            .await?;
            trainer = back;
            let progress = progress?;
            let blob = format!("sgt/{}/ckpt/{}.safetensors", job.model_id, uuid::Uuid::new_v4());
            self.repo.blobs.put(&blob, trainer.checkpoint()?.into()).await?;
            let beat = self
                .repo
                .heartbeat(
                    &job,
                    &self.id,
                    self.lease_ms(),
                    (progress.step, progress.loss),
                    Some(blob.clone()),
                )
                .await;
            let (next_job, model) = match beat {
                Ok(v) => v,
                Err(e) => {
                    self.repo.blobs.delete(&blob).await.ok();
                    return lost(e);
                }
            };
            job = next_job;
            self.publish(&model, &trainer)?;
            if let Some(previous) = last_blob.replace(blob.clone()) {
                self.prune(&job.model_id, &blob, &previous).await;
            }
            if !progress.flat && self.turn_is_over(turn_started, &job).await? {
                return match self.repo.yield_job(&job, &self.id).await {
                    Ok(()) => {
                        tracing::info!(worker = %self.id, model_id = %job.model_id, step = progress.step, "gave way to waiting jobs");
                        Ok(())
                    }
                    Err(e) => lost(e),
                };
            }
            if job.data_version > trained_version {
                let (v, x, y) = self.load_data(&model).await?;
                trained_version = v;
                trainer.set_data(x, y)?;
            } else if progress.flat {
                match self.repo.finish_job(&job, &self.id, trained_version).await {
                    Ok(true) => {
                        tracing::info!(worker = %self.id, model_id = %job.model_id, step = progress.step, loss = progress.loss, "training done");
                        return Ok(());
                    }
                    Ok(false) => match self.repo.refresh_job(&job, &self.id).await {
                        Ok(refreshed) => job = refreshed,
                        Err(e) => return lost(e),
                    },
                    Err(e) => return lost(e),
                }
            }
        }
    }

    /// Whether `job` has had its turn and others wait. A job waits a grace period first, so
    /// that an idle worker, which polls, would have taken it.
    async fn turn_is_over(&self, started: std::time::Instant, job: &TrainJob) -> Result<bool, Failure> {
        let Some(turn) = self.cfg.turn else {
            return Ok(false);
        };
        if started.elapsed() < turn {
            return Ok(false);
        }
        let grace = 2 * self.cfg.poll.as_millis() as i64;
        Ok(self.repo.others_waiting(job, grace).await?)
    }

    /// Hands the freshly trained best member to the inference cache.
    fn publish(&self, model: &SgtModel, trainer: &Trainer) -> Result<(), Failure> {
        if let Some(ck) = &model.checkpoint {
            let mlp = trainer.ens.member(trainer.ens.best)?;
            self.cache.insert(&model.model_id, ck.version, Arc::new(mlp));
        }
        Ok(())
    }

    /// Deletes this model's checkpoints other than `live` (just written) and `previous` (kept
    /// one generation for readers that saw the earlier record).
    async fn prune(&self, model_id: &str, live: &str, previous: &str) {
        let Ok(blobs) = self.repo.blobs.list(&format!("sgt/{model_id}/ckpt/")).await else {
            return;
        };
        for b in blobs.into_iter().filter(|b| b != live && b != previous) {
            self.repo.blobs.delete(&b).await.ok();
        }
    }

    async fn trainer(&self, model: &SgtModel, x: Tensor, y: Tensor) -> Result<Trainer, Failure> {
        let widths = std_widths(model.in_size as usize, model.out_size as usize);
        let cfg = self.cfg.train.clone();
        if let Some(ck) = &model.checkpoint {
            if let Some(bytes) = self.repo.blobs.get(&ck.blob).await? {
                let ckpt = decode_checkpoint(&bytes, &self.device)?;
                if ckpt.widths == widths {
                    return Ok(Trainer::resume(&widths, &ckpt, x, y, cfg)?);
                }
            }
        }
        let ens = Ensemble::init(&widths, MEMBERS, model.seed, &self.device)?;
        Ok(Trainer::new(ens, x, y, cfg)?)
    }

    /// All of the model's samples as `(data_version, inputs [n, in], labels [n, out])`.
    async fn load_data(&self, model: &SgtModel) -> Result<(u64, Tensor, Tensor), Failure> {
        let chunks = self.repo.load_train_data(&model.model_id).await?;
        let version = chunks.iter().map(|(c, _)| c.seq).max().unwrap_or(0);
        let (i, o) = (model.in_size as usize, model.out_size as usize);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (_, bytes) in &chunks {
            let values = maas_sidecar_client::wire::decode_f32(bytes)?;
            for row in values.chunks_exact(i + o) {
                xs.extend_from_slice(&row[..i]);
                ys.extend_from_slice(&row[i..]);
            }
        }
        let n = xs.len() / i.max(1);
        if n == 0 {
            return Err("no training data".into());
        }
        Ok((
            version,
            Tensor::from_vec(xs, (n, i), &self.device)?,
            Tensor::from_vec(ys, (n, o), &self.device)?,
        ))
    }
}

fn lost<T>(e: LeaseError) -> Result<T, Failure> {
    match e {
        LeaseError::Lost => Err("lease lost or model deleted".into()),
        LeaseError::Store(e) => Err(e.into()),
    }
}
