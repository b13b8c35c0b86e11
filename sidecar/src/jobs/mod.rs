//! The leased-job runner: every long operation that is not SGT training (dataset validation,
//! quality checks, processing) is a [`Task`] in the store, and each sidecar runs a [`Runner`]
//! that claims tasks, runs their [`Job`], and extends the lease while it works.
//!
//! - A worker that dies leaves its lease to run out; another claims the task and runs it again
//!   from the start. Jobs are written so that this is safe: they read, then write their records
//!   in one transaction with the task's end ([`TaskRepo::finish`]). After [`MAX_ATTEMPTS`]
//!   starts the task fails, and the job's [`Job::abandon`] writes leave its records clean.
//! - A cancel from the owner is seen at the next heartbeat: the job is dropped (blocking work
//!   sees [`Ctx::is_canceled`]), `abandon` runs, and the task ends `canceled`.

pub mod blob_reader;
pub mod blob_writer;
pub mod dataset_processing;
pub mod dataset_quality;
pub mod dataset_validation;
pub mod model_validation;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use maas_store::records::tasks::{End, Held, Task, TaskRepo, TaskStatus, MAX_ATTEMPTS};
use maas_store::table::Write;
use serde_json::Value;

pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// How a job's run ended, and the records it writes with that end.
pub struct Finish {
    /// `Completed`, or `Failed` when the work found the input wanting (an invalid file).
    pub status: TaskStatus,
    pub result: Value,
    pub error: Option<String>,
    /// Written in one transaction with the task's end.
    pub writes: Vec<Write>,
}

impl Finish {
    /// The task failed on its input (nothing to write).
    pub fn failed(error: impl Into<String>) -> Finish {
        Finish {
            status: TaskStatus::Failed,
            result: Value::Object(Default::default()),
            error: Some(error.into()),
            writes: Vec::new(),
        }
    }
}

/// One kind of long operation.
#[async_trait]
pub trait Job: Send + Sync {
    /// The task kind it runs.
    fn kind(&self) -> &'static str;
    /// Does the work. An `Err` is a fault (the store failed, say): the task is tried again.
    async fn run(&self, ctx: &Ctx) -> Result<Finish, Failure>;
    /// The writes that leave the job's records clean when the task ends without finishing
    /// (canceled, or failed after its last attempt), for the reason given.
    async fn abandon(&self, task: &Task, reason: &str) -> Result<Vec<Write>, Failure>;
    /// Called once the task's end is written.
    async fn finished(&self, _task: &Task, _end: &Finish) {}
}

/// Counts the bytes a completed task stored (its result's `size`) against its owner. A
/// failure is logged: the files are written, and a quota off by one file beats a lost one.
pub async fn count_storage(storage: &maas_store::records::storage::StorageRepo, task: &Task, end: &Finish) {
    if end.status != TaskStatus::Completed {
        return;
    }
    let size = end.result.get("size").and_then(Value::as_i64).unwrap_or(0);
    if let Err(e) = storage.add(&task.owner, size).await {
        tracing::error!(owner = %task.owner, error = %e, "cannot count storage");
    }
}

/// What a running job sees of its task: its input, and where to report.
pub struct Ctx {
    pub task: Task,
    tasks: TaskRepo,
    progress: Progress,
    log_lines: AtomicU64,
    canceled: Arc<AtomicBool>,
}

impl Ctx {
    fn new(task: Task, tasks: TaskRepo) -> Ctx {
        Ctx {
            log_lines: AtomicU64::new(task.log_lines),
            progress: Progress::at(task.progress),
            task,
            tasks,
            canceled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Where to report percent done; blocking work may hold a clone.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// A flag that turns true when the task is canceled or lost; blocking work polls it.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.canceled.clone()
    }

    pub fn is_canceled(&self) -> bool {
        self.canceled.load(Ordering::Relaxed)
    }

    /// Appends a line to the task's log (a failure to write it is only traced).
    pub async fn log(&self, level: &str, message: &str) {
        let seq = self.log_lines.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(task_id = %self.task.task_id, kind = %self.task.kind, level, "{message}");
        if let Err(e) = self.tasks.log(&self.task.task_id, seq, level, message).await {
            tracing::warn!(task_id = %self.task.task_id, error = %e, "cannot write a task's log line");
        }
    }

    fn log_lines(&self) -> u64 {
        self.log_lines.load(Ordering::Relaxed)
    }
}

/// Percent done, shared between a job and the heartbeat that reports it.
#[derive(Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    fn at(percent: f64) -> Progress {
        let p = Progress::default();
        p.set(percent);
        p
    }

    pub fn set(&self, percent: f64) {
        self.0.store(percent.clamp(0.0, 100.0).to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// How often an idle runner looks for tasks.
    pub poll: Duration,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
}

pub struct Runner {
    pub id: String,
    pub tasks: TaskRepo,
    pub jobs: HashMap<&'static str, Arc<dyn Job>>,
    pub cfg: RunnerConfig,
}

impl Runner {
    pub fn new(id: String, tasks: TaskRepo, jobs: Vec<Arc<dyn Job>>, cfg: RunnerConfig) -> Runner {
        let jobs = jobs.into_iter().map(|j| (j.kind(), j)).collect();
        Runner { id, tasks, jobs, cfg }
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        loop {
            match self.next().await {
                Ok(Some(task)) => self.work(task).await,
                Ok(None) => tokio::time::sleep(self.cfg.poll).await,
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "cannot list tasks");
                    tokio::time::sleep(self.cfg.poll).await;
                }
            }
        }
    }

    fn lease_ms(&self) -> i64 {
        self.cfg.lease.as_millis() as i64
    }

    async fn next(&self) -> Result<Option<Task>, Failure> {
        for t in self.tasks.claimable().await? {
            if !self.jobs.contains_key(t.kind.as_str()) {
                continue;
            }
            if let Some(claimed) = self.tasks.claim(&t, &self.id, self.lease_ms()).await? {
                return Ok(Some(claimed));
            }
        }
        Ok(None)
    }

    /// Runs one claimed task to its end, or until its lease is lost.
    pub async fn work(&self, task: Task) {
        let job = self.jobs[task.kind.as_str()].clone();
        if task.cancel_requested {
            return self.abandon(&*job, task, TaskStatus::Canceled, "canceled").await;
        }
        if task.attempts > MAX_ATTEMPTS {
            let why = format!("the worker running this task stopped {MAX_ATTEMPTS} times");
            return self.abandon(&*job, task, TaskStatus::Failed, &why).await;
        }
        let ctx = Ctx::new(task, self.tasks.clone());
        ctx.log("info", &format!("started (attempt {})", ctx.task.attempts))
            .await;
        let mut held = ctx.task.clone();
        let run = job.run(&ctx);
        tokio::pin!(run);
        let mut beat = tokio::time::interval((self.cfg.lease / 3).max(Duration::from_millis(50)));
        beat.tick().await;
        let outcome = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = beat.tick() => {
                    let b = self.tasks.heartbeat(&held, &self.id, self.lease_ms(), ctx.progress.get(), ctx.log_lines()).await;
                    match b {
                        Ok(Held::Yes(t)) => held = t,
                        Ok(Held::CancelRequested(mut t)) => {
                            ctx.canceled.store(true, Ordering::Relaxed);
                            t.log_lines = t.log_lines.max(ctx.log_lines());
                            return self.abandon(&*job, t, TaskStatus::Canceled, "canceled").await;
                        }
                        Ok(Held::Lost) => {
                            ctx.canceled.store(true, Ordering::Relaxed);
                            tracing::warn!(worker = %self.id, task_id = %held.task_id, "lost a task's lease");
                            return;
                        }
                        Err(e) => tracing::warn!(worker = %self.id, task_id = %held.task_id, error = %e, "cannot extend a task's lease"),
                    }
                }
            }
        };
        match outcome {
            Ok(finish) => self.end(&*job, &ctx, held, finish).await,
            Err(e) => {
                ctx.log("error", &format!("stopped: {e}")).await;
                if held.attempts >= MAX_ATTEMPTS {
                    let why = format!("the task failed {MAX_ATTEMPTS} times; the last time: {e}");
                    held.log_lines = held.log_lines.max(ctx.log_lines());
                    self.abandon(&*job, held, TaskStatus::Failed, &why).await;
                }
                // Otherwise the lease runs out and the task is tried again.
            }
        }
    }

    async fn end(&self, job: &dyn Job, ctx: &Ctx, held: Task, finish: Finish) {
        let verb = if finish.status == TaskStatus::Completed {
            "completed"
        } else {
            "failed"
        };
        let line = match &finish.error {
            Some(e) => format!("{verb}: {e}"),
            None => verb.to_string(),
        };
        ctx.log(if finish.error.is_some() { "error" } else { "info" }, &line)
            .await;
        let end = End {
            status: finish.status,
            result: Some(finish.result.clone()),
            error: finish.error.clone(),
            log_lines: ctx.log_lines(),
        };
        match self.tasks.finish(&held, &self.id, end, finish.writes.clone()).await {
            Ok(Held::Yes(t)) => job.finished(&t, &finish).await,
            Ok(Held::CancelRequested(mut t)) => {
                t.log_lines = t.log_lines.max(ctx.log_lines());
                self.abandon(job, t, TaskStatus::Canceled, "canceled").await
            }
            Ok(Held::Lost) => {}
            Err(e) => tracing::warn!(worker = %self.id, task_id = %held.task_id, error = %e, "cannot end a task"),
        }
    }

    /// Ends a held task without its work: the job's records are left clean first.
    async fn abandon(&self, job: &dyn Job, task: Task, status: TaskStatus, why: &str) {
        let writes = match job.abandon(&task, why).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(worker = %self.id, task_id = %task.task_id, error = %e, "cannot clean up after a task");
                Vec::new()
            }
        };
        let seq = task.log_lines + 1;
        self.tasks.log(&task.task_id, seq, "info", why).await.ok();
        let end = End {
            status,
            result: None,
            error: (status != TaskStatus::Canceled).then(|| why.to_string()),
            log_lines: seq,
        };
        if let Err(e) = self.tasks.finish(&task, &self.id, end, writes).await {
            tracing::warn!(worker = %self.id, task_id = %task.task_id, error = %e, "cannot end a task");
        }
    }
}
