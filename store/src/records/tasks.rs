//! Tasks: every long operation (upload validation, quality check, processing, later training)
//! is a task that a sidecar runs as a leased job and that users follow at `/api/v1/tasks`.
//!
//! A task lives under its owner (`TASKS#{owner}` / `TASK#{id}`): listing is one query, and
//! another user's id is simply missing. While it waits or runs it is also in the queue index
//! (gsi1 `TASKQ`, oldest first). A worker claims it with a conditional write that sets a lease,
//! and extends the lease as it goes; a task whose worker died (its lease ran out) is claimed
//! again, at most [`MAX_ATTEMPTS`] times in all. Every change is conditional on `ver`, so a
//! cancel or rename from the API and a worker's heartbeat never overwrite each other. A task's
//! log lines are items beside it, numbered from 1.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{from_item, to_item, Record};
use crate::error::{StoreError, StoreResult};
use crate::item::Key;
use crate::keys::part;
use crate::table::{Cond, Query, Table, Write};
use crate::Stores;

/// How many times a task is started before a worker that keeps dying fails it.
pub const MAX_ATTEMPTS: u32 = 3;
/// Log lines kept per task; later ones are counted but not stored.
pub const MAX_LOG_LINES: u64 = 10_000;
const QUEUE: &str = "TASKQ";

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl TaskStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Canceled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Canceled => "canceled",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Task {
    pub task_id: String,
    pub owner: String,
    /// What runs: `dataset_validation`, `dataset_quality`, `dataset_processing`, ...
    pub kind: String,
    pub name: String,
    pub status: TaskStatus,
    /// Percent done, 0 to 100.
    #[serde(default)]
    pub progress: f64,
    /// What the worker needs, in the kind's own shape.
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
    /// Set by the owner; the worker stops at its next heartbeat and the task ends `canceled`.
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub lease_owner: Option<String>,
    #[serde(default)]
    pub lease_until_ms: i64,
    #[serde(default)]
    pub log_lines: u64,
    /// Epoch milliseconds, all of them.
    pub created_at: i64,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    #[serde(default)]
    pub ver: u64,
}

impl Task {
    pub fn new(owner: &str, kind: &str, name: &str, input: Value) -> Task {
        let now = crate::now_millis();
        Task {
            task_id: uuid::Uuid::now_v7().to_string(),
            owner: owner.into(),
            kind: kind.into(),
            name: name.into(),
            status: TaskStatus::Queued,
            progress: 0.0,
            input,
            result: None,
            error: None,
            cancel_requested: false,
            attempts: 0,
            lease_owner: None,
            lease_until_ms: 0,
            log_lines: 0,
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            ver: 0,
        }
    }

    pub fn key_for(owner: &str, id: &str) -> Key {
        Key::new(format!("TASKS#{}", part(owner)), format!("TASK#{}", part(id)))
    }

    /// Whether a worker may take it now: waiting, or running under a lease that ran out.
    pub fn is_claimable(&self, now_ms: i64) -> bool {
        match self.status {
            TaskStatus::Queued => true,
            TaskStatus::Running => self.lease_until_ms < now_ms,
            _ => false,
        }
    }

    /// The write that stores this task as it will be once `next` (a changed copy) replaces it.
    fn replaced_by(&self, mut next: Task) -> StoreResult<Write> {
        next.ver = self.ver + 1;
        next.updated_at = crate::now_millis();
        Ok(Write::Put {
            item: to_item(&next)?,
            cond: Cond::Version(self.ver),
        })
    }

    /// The write that creates it.
    pub fn create_write(&self) -> StoreResult<Write> {
        Ok(Write::Put {
            item: to_item(self)?,
            cond: Cond::NotExists,
        })
    }
}

impl Record for Task {
    fn key(&self) -> Key {
        Task::key_for(&self.owner, &self.task_id)
    }
    fn gsi1(&self) -> Option<Key> {
        (!self.status.is_finished())
            .then(|| Key::new(QUEUE, format!("{:016}#{}", self.created_at.max(0), part(&self.task_id))))
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

/// One line of a task's log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub task_id: String,
    pub seq: u64,
    /// Epoch milliseconds.
    pub at: i64,
    pub level: String,
    pub message: String,
}

impl LogLine {
    fn partition(task_id: &str) -> String {
        format!("TASKLOG#{}", part(task_id))
    }

    fn sort(seq: u64) -> String {
        format!("{seq:010}")
    }
}

impl Record for LogLine {
    fn key(&self) -> Key {
        Key::new(LogLine::partition(&self.task_id), LogLine::sort(self.seq))
    }
    fn ver(&self) -> u64 {
        0
    }
}

/// What a worker learns when it writes to a task it holds.
#[derive(Debug)]
pub enum Held {
    /// Still its own: the task as now stored.
    Yes(Task),
    /// The owner asked to cancel it: stop, clean up, and call [`TaskRepo::settle`].
    CancelRequested(Task),
    /// Another worker holds it now, or it was deleted: stop without writing.
    Lost,
}

#[derive(Clone)]
pub struct TaskRepo {
    table: Arc<dyn Table>,
}

impl TaskRepo {
    pub fn new(stores: &Stores) -> Self {
        TaskRepo {
            table: stores.table.clone(),
        }
    }

    pub async fn create(&self, t: &Task) -> StoreResult<()> {
        self.table.write(vec![t.create_write()?]).await
    }

    pub async fn get(&self, owner: &str, id: &str) -> StoreResult<Option<Task>> {
        self.table
            .get(&Task::key_for(owner, id))
            .await?
            .map(from_item)
            .transpose()
    }

    /// The owner's tasks, oldest first (ids are time-ordered).
    pub async fn list(&self, owner: &str) -> StoreResult<Vec<Task>> {
        let q = Query::primary(format!("TASKS#{}", part(owner)), "TASK#");
        self.table.query(&q).await?.into_iter().map(from_item).collect()
    }

    /// Writes the owner's change (a new name, a cancel request) over the task as read;
    /// `ConditionFailed` if a worker changed it meanwhile.
    pub async fn update(&self, old: &Task, next: Task) -> StoreResult<Task> {
        let write = old.replaced_by(next)?;
        let Write::Put { item, .. } = &write else {
            unreachable!()
        };
        let stored: Task = from_item(item.clone())?;
        self.table.write(vec![write]).await?;
        Ok(stored)
    }

    /// Deletes a finished task and its log.
    pub async fn delete(&self, t: &Task) -> StoreResult<()> {
        self.table.delete(t.key(), Cond::Version(t.ver)).await?;
        let lines = self
            .table
            .query(&Query::primary(LogLine::partition(&t.task_id), ""))
            .await?;
        for item in lines {
            let line: LogLine = from_item(item)?;
            self.table.delete(line.key(), Cond::Always).await?;
        }
        Ok(())
    }

    /// Tasks a worker may take now, longest waiting first.
    pub async fn claimable(&self) -> StoreResult<Vec<Task>> {
        let now = crate::now_millis();
        let items = self.table.query(&Query::gsi1(QUEUE, "")).await?;
        let tasks: Vec<Task> = items.into_iter().map(from_item).collect::<StoreResult<_>>()?;
        Ok(tasks.into_iter().filter(|t| t.is_claimable(now)).collect())
    }

    /// Takes the lease on `t`, counting an attempt; `None` when another worker won the race.
    pub async fn claim(&self, t: &Task, worker: &str, lease_ms: i64) -> StoreResult<Option<Task>> {
        let now = crate::now_millis();
        let mut next = t.clone();
        next.status = TaskStatus::Running;
        next.lease_owner = Some(worker.into());
        next.lease_until_ms = now + lease_ms;
        next.attempts += 1;
        next.started_at.get_or_insert(now);
        match self.update(t, next).await {
            Ok(claimed) => Ok(Some(claimed)),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Re-reads a task this worker holds.
    pub async fn held(&self, t: &Task, worker: &str) -> StoreResult<Held> {
        let Some(now) = self.get(&t.owner, &t.task_id).await? else {
            return Ok(Held::Lost);
        };
        if now.status != TaskStatus::Running || now.lease_owner.as_deref() != Some(worker) {
            return Ok(Held::Lost);
        }
        if now.cancel_requested {
            return Ok(Held::CancelRequested(now));
        }
        Ok(Held::Yes(now))
    }

    /// Extends the lease and records progress and the number of log lines.
    pub async fn heartbeat(
        &self,
        t: &Task,
        worker: &str,
        lease_ms: i64,
        progress: f64,
        log_lines: u64,
    ) -> StoreResult<Held> {
        let mut task = t.clone();
        for _ in 0..8 {
            if task.cancel_requested {
                return Ok(Held::CancelRequested(task));
            }
            let mut next = task.clone();
            next.lease_until_ms = crate::now_millis() + lease_ms;
            next.progress = progress.clamp(0.0, 100.0);
            next.log_lines = log_lines;
            match self.update(&task, next).await {
                Ok(stored) => return Ok(Held::Yes(stored)),
                Err(StoreError::ConditionFailed) => match self.held(&task, worker).await? {
                    Held::Yes(now) => task = now,
                    other => return Ok(other),
                },
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::backend("too much contention on a task"))
    }

    /// Ends a held task as `status` with its result or error, together with `writes` (the
    /// records the task made) in one transaction: both happen or neither does.
    /// `CancelRequested` or `Lost` when the task changed meanwhile; then nothing was written.
    pub async fn finish(&self, t: &Task, worker: &str, end: End, writes: Vec<Write>) -> StoreResult<Held> {
        let mut task = t.clone();
        for _ in 0..8 {
            if task.cancel_requested && end.status != TaskStatus::Canceled {
                return Ok(Held::CancelRequested(task));
            }
            let mut next = task.clone();
            next.status = end.status;
            next.result = end.result.clone();
            next.error = end.error.clone();
            next.lease_owner = None;
            next.lease_until_ms = 0;
            next.log_lines = end.log_lines.max(task.log_lines);
            if end.status == TaskStatus::Completed {
                next.progress = 100.0;
            }
            next.finished_at = Some(crate::now_millis());
            let mut all = vec![task.replaced_by(next)?];
            all.extend(writes.iter().cloned());
            match self.table.write(all).await {
                Ok(()) => return self.held_after_finish(&task).await,
                Err(StoreError::ConditionFailed) => match self.held(&task, worker).await? {
                    Held::Yes(now) | Held::CancelRequested(now) if now.ver != task.ver => task = now,
                    // The task is as read, so one of `writes` failed its condition.
                    Held::Yes(_) | Held::CancelRequested(_) => return Err(StoreError::ConditionFailed),
                    Held::Lost => return Ok(Held::Lost),
                },
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::backend("too much contention on a task"))
    }

    async fn held_after_finish(&self, t: &Task) -> StoreResult<Held> {
        Ok(match self.get(&t.owner, &t.task_id).await? {
            Some(now) => Held::Yes(now),
            None => Held::Lost,
        })
    }

    /// Appends a log line (past [`MAX_LOG_LINES`], it is dropped).
    pub async fn log(&self, task_id: &str, seq: u64, level: &str, message: &str) -> StoreResult<()> {
        if seq == 0 || seq > MAX_LOG_LINES {
            return Ok(());
        }
        let line = LogLine {
            task_id: task_id.into(),
            seq,
            at: crate::now_millis(),
            level: level.into(),
            message: message.chars().take(2000).collect(),
        };
        self.table.put(to_item(&line)?, Cond::Always).await
    }

    /// Up to `limit` log lines after line `after`, in order.
    pub async fn logs(&self, task_id: &str, after: u64, limit: usize) -> StoreResult<Vec<LogLine>> {
        let q = Query::primary(LogLine::partition(task_id), "")
            .after(Some(LogLine::sort(after)))
            .limit(limit);
        self.table.query(&q).await?.into_iter().map(from_item).collect()
    }
}

/// How a task ends.
#[derive(Clone, Debug)]
pub struct End {
    pub status: TaskStatus,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub log_lines: u64,
}
