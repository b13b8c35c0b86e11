//! Tasks (seed 002): the long operations a user started (upload validation, quality checks,
//! processing), as the sidecars run them: list, detail, rename or cancel, delete, and logs.

use axum::extract::State;
use maas_store::records::tasks::Task;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::accounts::Done;
use super::envelope::{iso_millis, ok, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::params::{page, page_of, PageQuery};
use super::users::Pagination;
use super::validate;
use crate::state::AppState;

const STATUSES: &[&str] = &["queued", "running", "completed", "failed", "canceled"];

#[derive(Serialize, ToSchema)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    /// `dataset_validation`, `dataset_quality`, `dataset_processing`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `queued`, `running`, `completed`, `failed` or `canceled`.
    pub status: String,
    /// Percent done, 0 to 100.
    pub progress: f64,
    /// True once the owner asked to cancel; the task ends `canceled`.
    pub cancel_requested: bool,
    /// What the task was given.
    #[schema(value_type = Object)]
    pub input: Value,
    /// What it produced, once completed (or what it found, when it failed on bad input).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
    /// How many times it was started (a task whose worker died is started again).
    pub attempts: u32,
    pub log_lines: u64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> Self {
        TaskView {
            id: t.task_id.clone(),
            name: t.name.clone(),
            kind: t.kind.clone(),
            status: t.status.as_str().into(),
            progress: (t.progress * 10.0).round() / 10.0,
            cancel_requested: t.cancel_requested,
            input: t.input.clone(),
            result: t.result.clone(),
            error: t.error.clone(),
            attempts: t.attempts,
            log_lines: t.log_lines,
            created_at: iso_millis(t.created_at),
            started_at: t.started_at.map(iso_millis),
            finished_at: t.finished_at.map(iso_millis),
            updated_at: iso_millis(t.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskPage {
    pub items: Vec<TaskView>,
    pub pagination: Pagination,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskListQuery {
    /// 1-based page, 1 by default.
    #[param(minimum = 1, maximum = 1000)]
    pub page: Option<u32>,
    /// Page size, 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only tasks in this status.
    #[param(pattern = "^(queued|running|completed|failed|canceled)$")]
    pub status: Option<String>,
    /// Only tasks of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", max_length = 64)]
    pub kind: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct TaskUpdate {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    /// `canceled` cancels the task; no other status can be set.
    #[schema(pattern = "^canceled$")]
    pub status: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskId {
    pub task_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct LogLineView {
    /// 1-based line number.
    pub line: u64,
    pub time: String,
    pub level: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct LogPage {
    pub task_id: String,
    pub items: Vec<LogLineView>,
    pub pagination: Pagination,
}

/// The caller's task; another user's answers 404, as a missing one does.
pub async fn owned(state: &AppState, who: &Principal, id: &str) -> Result<Task, ApiError> {
    if !validate::could_be_id(id) {
        return Err(ApiError::not_found("task"));
    }
    state
        .tasks
        .get(&who.user.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))
}

/// The caller's tasks, newest first.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(TaskListQuery),
    responses((status = 200, body = super::envelope::Envelope<TaskPage>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<TaskListQuery>,
) -> ApiResult<TaskPage> {
    let (p, limit) = page(q.page, q.limit, 1000)?;
    if let Some(s) = &q.status {
        validate::one_of("status", s, STATUSES)?;
    }
    if let Some(k) = &q.kind {
        validate::at_most("type", k, 64)?;
    }
    let mut all = state.tasks.list(&who.user.user_id).await?;
    all.retain(|t| {
        q.status.as_deref().is_none_or(|s| t.status.as_str() == s) && q.kind.as_deref().is_none_or(|k| t.kind == k)
    });
    all.reverse();
    let (items, pagination) = page_of(all, p, limit);
    Ok(ok(TaskPage {
        items: items.iter().map(TaskView::from).collect(),
        pagination,
    }))
}

#[utoipa::path(get, path = "/api/v1/tasks/{task_id}", tag = "tasks", params(TaskId),
    responses((status = 404, description = "No such task (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<TaskView>)))]
pub async fn get(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<TaskView> {
    let t = owned(&state, &who, &id).await?;
    Ok(ok(TaskView::from(&t)))
}

/// Renames a task, or cancels it with `"status": "canceled"`. A running task stops at its
/// worker's next heartbeat (within seconds) and cleans up what it started.
#[utoipa::path(put, path = "/api/v1/tasks/{task_id}", tag = "tasks", params(TaskId), request_body = TaskUpdate,
    responses((status = 404, description = "No such task (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "The task has finished and cannot be canceled", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<TaskView>)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<TaskUpdate>,
) -> ApiResult<TaskView> {
    let name = req
        .name
        .as_deref()
        .map(|n| validate::name("name", n, 100))
        .transpose()?;
    if let Some(s) = &req.status {
        validate::one_of("status", s, &["canceled"])?;
    }
    for _ in 0..8 {
        let t = owned(&state, &who, &id).await?;
        let mut next = t.clone();
        if let Some(n) = &name {
            next.name = n.clone();
        }
        if req.status.is_some() && !t.cancel_requested {
            if t.status.is_finished() {
                return Err(ApiError::new(
                    Code::Resource002,
                    format!(
                        "the task is {}; only a queued or running task can be canceled",
                        t.status.as_str()
                    ),
                ));
            }
            next.cancel_requested = true;
        }
        match state.tasks.update(&t, next).await {
            Ok(saved) => return Ok(ok(TaskView::from(&saved))),
            // Its worker wrote meanwhile (a heartbeat): read it again.
            Err(maas_store::StoreError::ConditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(super::profile::conflict_on_race(
        maas_store::StoreError::ConditionFailed,
    ))
}

/// Deletes a finished task and its log; a queued or running one is 409 (cancel it first).
#[utoipa::path(delete, path = "/api/v1/tasks/{task_id}", tag = "tasks", params(TaskId),
    responses((status = 404, description = "No such task (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "The task has not finished", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<Done>)))]
pub async fn delete(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<Done> {
    let t = owned(&state, &who, &id).await?;
    if !t.status.is_finished() {
        return Err(ApiError::new(
            Code::Resource003,
            format!(
                "the task is {}; cancel it, or wait until it finishes",
                t.status.as_str()
            ),
        ));
    }
    state.tasks.delete(&t).await.map_err(super::profile::conflict_on_race)?;
    Ok(ok(Done { ok: true }))
}

/// A task's log, oldest line first.
#[utoipa::path(get, path = "/api/v1/tasks/{task_id}/logs", tag = "tasks", params(TaskId, PageQuery),
    responses((status = 404, description = "No such task (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<LogPage>)))]
pub async fn logs(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<LogPage> {
    let (p, limit) = page(q.page, q.limit, 1000)?;
    let t = owned(&state, &who, &id).await?;
    let after = (p as u64 - 1) * limit as u64;
    let lines = state.tasks.logs(&t.task_id, after, limit as usize).await?;
    let total = t.log_lines.min(maas_store::records::tasks::MAX_LOG_LINES) as usize;
    Ok(ok(LogPage {
        task_id: t.task_id,
        items: lines
            .into_iter()
            .map(|l| LogLineView {
                line: l.seq,
                time: iso_millis(l.at),
                level: l.level,
                message: l.message,
            })
            .collect(),
        pagination: Pagination::new(p, limit, total),
    }))
}

/// One of `owner`'s unfinished tasks whose input names `id` as its `key` (`dataset_id`,
/// `version_id`), if any.
pub async fn busy_with(state: &AppState, owner: &str, key: &str, id: &str) -> Result<Option<Task>, ApiError> {
    let tasks = state.tasks.list(owner).await?;
    Ok(tasks
        .into_iter()
        .find(|t| !t.status.is_finished() && t.input.get(key).and_then(Value::as_str) == Some(id)))
}

/// The 409 for a resource (`what`) that task `t` still uses.
pub fn busy(t: &Task, what: &str) -> ApiError {
    ApiError::new(
        Code::Resource003,
        format!(
            "task {} ({}) is using the {what}; cancel it or wait until it finishes",
            t.task_id, t.kind
        ),
    )
}

/// Waits up to `at_most` for a task just created to finish; the task as it then is.
pub async fn wait(state: &AppState, t: &Task, at_most: std::time::Duration) -> Result<Task, ApiError> {
    let until = std::time::Instant::now() + at_most;
    let mut pause = std::time::Duration::from_millis(20);
    loop {
        let now = state
            .tasks
            .get(&t.owner, &t.task_id)
            .await?
            .unwrap_or_else(|| t.clone());
        if now.status.is_finished() || std::time::Instant::now() + pause > until {
            return Ok(now);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(500));
    }
}
