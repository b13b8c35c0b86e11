//! Dataset versions (seed 002 版本管理) and processing (seed 004 `/datasets/process`).
//!
//! A version is immutable: a snapshot of a ready dataset's file, or the train, validation and
//! test splits processing wrote. Jobs refer to a version, so what they read never changes.
//! Processing runs as a `dataset_processing` task; the call waits a little for it, so a small
//! dataset is answered with its splits, as seed 004 shows, and a large one with its task.

use std::time::Duration;

use axum::extract::State;
use maas_datasets::Template;
use maas_store::records::datasets::{DatasetVersion, VersionFile};
use maas_store::records::tasks::Task;
use maas_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::accounts::Done;
use super::envelope::{created, iso_millis, ok, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::params::{page, page_of};
use super::users::Pagination;
use super::validate;
use crate::state::AppState;

/// The task that processes a dataset.
pub const PROCESSING: &str = "dataset_processing";
/// How long `process` waits for its task before answering with the task alone.
const PROCESS_WAIT: Duration = Duration::from_secs(20);

#[derive(Serialize, ToSchema)]
pub struct VersionFileView {
    /// `all` (a snapshot), `train`, `validation` or `test`.
    pub split: String,
    pub samples: u64,
    pub size: u64,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetVersionView {
    pub id: String,
    pub dataset_id: String,
    pub version: String,
    pub description: String,
    /// `processing`, `ready` or `failed`.
    pub status: String,
    pub format: String,
    pub files: Vec<VersionFileView>,
    pub samples_count: u64,
    pub fields: Vec<String>,
    /// How processing made it, if it did.
    #[schema(value_type = Option<Object>)]
    pub processing: Option<Value>,
    pub task_id: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
}

impl From<&DatasetVersion> for DatasetVersionView {
    fn from(v: &DatasetVersion) -> Self {
        DatasetVersionView {
            id: v.version_id.clone(),
            dataset_id: v.dataset_id.clone(),
            version: v.version.clone(),
            description: v.description.clone(),
            status: v.status.clone(),
            format: v.format.clone(),
            files: v
                .files
                .iter()
                .map(|f| VersionFileView {
                    split: f.split.clone(),
                    samples: f.samples,
                    size: f.size,
                })
                .collect(),
            samples_count: v.samples_count,
            fields: v.fields.clone(),
            processing: v.processing.clone(),
            task_id: v.task_id.clone(),
            error: v.error.clone(),
            created_at: iso_millis(v.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DatasetVersionPage {
    pub items: Vec<DatasetVersionView>,
    pub pagination: Pagination,
}

#[derive(Deserialize, ToSchema)]
pub struct NewDatasetVersion {
    #[schema(max_length = 64)]
    pub dataset_id: String,
    /// Unique per dataset, letters, digits, `.`, `_` and `-`; `v1`, `v2`, ... by default.
    #[schema(max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub version: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionListQuery {
    /// Only this dataset's versions.
    #[param(max_length = 64)]
    pub dataset_id: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VersionId {
    pub version_id: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ProcessRequest {
    #[schema(max_length = 64)]
    pub dataset_id: String,
    /// The new version's name.
    #[schema(max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub output_name: String,
    /// 0.8 by default; the three ratios must sum to 1.
    #[schema(minimum = 0, maximum = 1)]
    pub train_ratio: Option<f64>,
    #[schema(minimum = 0, maximum = 1)]
    pub val_ratio: Option<f64>,
    #[schema(minimum = 0, maximum = 1)]
    pub test_ratio: Option<f64>,
    /// A prompt with `{field}` placeholders, rendered into each record's `text`.
    #[schema(max_length = 10000)]
    pub template: Option<String>,
    /// The same seed gives the same splits; 42 by default.
    #[schema(minimum = 0)]
    pub seed: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct Splits {
    pub train: u64,
    pub validation: u64,
    pub test: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ProcessView {
    pub task_id: String,
    /// The task's status: `completed` when it finished within the call.
    pub status: String,
    pub dataset_id: String,
    pub version_id: String,
    /// Where the splits are, as a path of the API.
    pub output_path: String,
    pub splits: Option<Splits>,
    pub message: String,
    pub processed_at: Option<String>,
}

/// The caller's version; another user's answers 404, as a missing one does.
async fn owned(state: &AppState, who: &Principal, id: &str) -> Result<DatasetVersion, ApiError> {
    if !validate::could_be_id(id) {
        return Err(ApiError::not_found("version"));
    }
    state
        .datasets
        .version(&who.user.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("version"))
}

fn check_label(field: &str, label: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(ApiError::field(
            Code::Validation003,
            field,
            format!("{field} must be 1 to 64 letters, digits, '.', '_' or '-'"),
        ));
    }
    Ok(())
}

fn taken(label: &str) -> ApiError {
    ApiError::new(
        Code::Resource002,
        format!("the dataset has a version named {label} already"),
    )
}

/// A version record of `dataset` in its first state.
fn version_of(d: &maas_store::records::datasets::Dataset, label: String, description: String) -> DatasetVersion {
    DatasetVersion {
        version_id: uuid::Uuid::now_v7().to_string(),
        owner: d.owner.clone(),
        dataset_id: d.dataset_id.clone(),
        version: label,
        description,
        status: "ready".into(),
        format: d.format.clone(),
        files: Vec::new(),
        samples_count: d.samples_count,
        fields: d.fields.clone(),
        processing: None,
        task_id: None,
        error: None,
        created_at: maas_store::now_millis(),
        ver: 0,
    }
}

/// The caller's dataset, which must be ready to be versioned or processed.
async fn ready_dataset(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<maas_store::records::datasets::Dataset, ApiError> {
    let d = super::datasets::owned(state, who, id).await.map_err(|e| match e.code {
        Code::Resource001 => ApiError::field(Code::Resource001, "dataset_id", "dataset not found"),
        _ => e,
    })?;
    if d.status != "ready" {
        return Err(ApiError::new(
            Code::Resource002,
            format!("the dataset is {}, not ready", d.status),
        ));
    }
    Ok(d)
}

/// Snapshots a ready dataset as a new version.
#[utoipa::path(post, path = "/api/v1/datasets/versions", tag = "datasets", request_body = NewDatasetVersion,
    responses((status = 404, description = "No such dataset (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "The dataset is not ready, or has a version of that name", body = super::envelope::ErrorBody),
        (status = 201, body = super::envelope::Envelope<DatasetVersionView>, links(
        ("GetDatasetVersion" = (operation_id = "v1-datasets-versions-get", parameters(("version_id" = "$response.body#/data/id"))))))))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<NewDatasetVersion>,
) -> ApiResult<DatasetVersionView> {
    let description = req.description.unwrap_or_default();
    validate::prose("description", &description, 2000)?;
    if let Some(l) = &req.version {
        check_label("version", l)?;
    }
    let d = ready_dataset(&state, &who, &req.dataset_id).await?;
    let existing = state.datasets.versions(&d.owner, Some(&d.dataset_id)).await?;
    let label = req.version.unwrap_or_else(|| format!("v{}", existing.len() + 1));
    let mut v = version_of(&d, label, description);
    v.files = vec![VersionFile {
        split: "all".into(),
        blob: d.blob.clone(),
        samples: d.samples_count,
        size: d.size,
    }];
    match state.datasets.create_version(&v, Vec::new()).await {
        Ok(()) => Ok(created(DatasetVersionView::from(&v))),
        Err(StoreError::ConditionFailed) => Err(taken(&v.version)),
        Err(e) => Err(e.into()),
    }
}

/// The caller's versions, newest first.
#[utoipa::path(get, path = "/api/v1/datasets/versions", tag = "datasets", params(VersionListQuery),
    responses((status = 200, body = super::envelope::Envelope<DatasetVersionPage>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<VersionListQuery>,
) -> ApiResult<DatasetVersionPage> {
    let (p, limit) = page(q.page, q.limit, 1000)?;
    validate::at_most("dataset_id", q.dataset_id.as_deref().unwrap_or_default(), 64)?;
    let mut all = state
        .datasets
        .versions(&who.user.user_id, q.dataset_id.as_deref())
        .await?;
    all.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.version_id.cmp(&a.version_id))
    });
    let (items, pagination) = page_of(all, p, limit);
    Ok(ok(DatasetVersionPage {
        items: items.iter().map(DatasetVersionView::from).collect(),
        pagination,
    }))
}

#[utoipa::path(get, path = "/api/v1/datasets/versions/{version_id}", tag = "datasets", params(VersionId),
    responses((status = 404, description = "No such version (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<DatasetVersionView>)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<DatasetVersionView> {
    Ok(ok(DatasetVersionView::from(&owned(&state, &who, &id).await?)))
}

/// Deletes a version and the files it owns; one a queued or running task uses is 409.
#[utoipa::path(delete, path = "/api/v1/datasets/versions/{version_id}", tag = "datasets", params(VersionId),
    responses((status = 404, description = "No such version (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "A queued or running task uses the version", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<Done>)))]
pub async fn delete(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<Done> {
    let v = owned(&state, &who, &id).await?;
    if let Some(t) = super::tasks::busy_with(&state, &v.owner, "version_id", &v.version_id).await? {
        return Err(super::tasks::busy(&t, "version"));
    }
    remove(&state, &v).await?;
    Ok(ok(Done { ok: true }))
}

/// Deletes a version's record, then the files it owns (a snapshot's file is its dataset's).
pub async fn remove(state: &AppState, v: &DatasetVersion) -> Result<(), ApiError> {
    state
        .datasets
        .delete_version(v)
        .await
        .map_err(super::profile::conflict_on_race)?;
    for f in v.files.iter().filter(|f| f.split != "all") {
        state.registry.blobs.delete(&f.blob).await.ok();
    }
    if v.status == "ready" {
        state.registry.count_storage(&v.owner, -(v.own_bytes() as i64)).await;
    }
    Ok(())
}

/// Splits a ready dataset into train, validation and test (seed 004), rendering `template`
/// into each record's `text`, as a new version. Answers with the splits when the task
/// finishes within 20 seconds; otherwise with the task to follow.
#[utoipa::path(post, path = "/api/v1/datasets/process", tag = "datasets", request_body = ProcessRequest,
    responses((status = 404, description = "No such dataset (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "The dataset is not ready, or has a version of that name", body = super::envelope::ErrorBody),
        (status = 422, description = "Ratios that do not sum to 1, or a placeholder that names no field", body = super::envelope::ErrorBody),
        (status = 201, body = super::envelope::Envelope<ProcessView>)))]
pub async fn process(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<ProcessRequest>,
) -> ApiResult<ProcessView> {
    check_label("output_name", &req.output_name)?;
    let ratios = [
        req.train_ratio.unwrap_or(0.8),
        req.val_ratio.unwrap_or(0.1),
        req.test_ratio.unwrap_or(0.1),
    ];
    if ratios.iter().any(|r| !(0.0..=1.0).contains(r)) || (ratios.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
        return Err(ApiError::field(
            Code::Validation003,
            "train_ratio",
            format!(
                "the ratios must each be 0 to 1 and sum to 1, not {}",
                ratios.iter().sum::<f64>()
            ),
        )
        .unprocessable());
    }
    if let Some(t) = &req.template {
        validate::prose("template", t, 10_000)?;
    }
    let d = ready_dataset(&state, &who, &req.dataset_id).await?;
    if let Some(t) = &req.template {
        let parsed =
            Template::parse(t).map_err(|e| ApiError::field(Code::Validation003, "template", e).unprocessable())?;
        let missing = parsed
            .fields()
            .find(|f| !d.fields.iter().any(|g| g == f))
            .map(str::to_string);
        if let Some(missing) = missing {
            return Err(ApiError::field(
                Code::Validation003,
                "template",
                format!(
                    "{{{missing}}} names no field of the dataset; it has {}",
                    d.fields.join(", ")
                ),
            )
            .unprocessable());
        }
    }
    state.registry.check_quota(&d.owner, d.size).await?;
    let seed = req.seed.unwrap_or(42);
    let processing = json!({"train_ratio": ratios[0], "val_ratio": ratios[1], "test_ratio": ratios[2], "template": req.template, "seed": seed});
    let mut v = version_of(&d, req.output_name.clone(), String::new());
    v.status = "processing".into();
    v.processing = Some(processing);
    let input = json!({
        "dataset_id": d.dataset_id, "version_id": v.version_id,
        "ratios": ratios, "template": req.template, "seed": seed,
    });
    let task = Task::new(
        &d.owner,
        PROCESSING,
        &format!("process {} into {}", d.name, v.version),
        input,
    );
    v.task_id = Some(task.task_id.clone());
    match state.datasets.create_version(&v, vec![task.create_write()?]).await {
        Ok(()) => {}
        Err(StoreError::ConditionFailed) => return Err(taken(&v.version)),
        Err(e) => return Err(e.into()),
    }
    let t = super::tasks::wait(&state, &task, PROCESS_WAIT).await?;
    let splits = t.result.as_ref().and_then(|r| r.get("splits")).map(|s| Splits {
        train: s["train"].as_u64().unwrap_or(0),
        validation: s["validation"].as_u64().unwrap_or(0),
        test: s["test"].as_u64().unwrap_or(0),
    });
    let message = match (t.status.as_str(), &t.error) {
        ("completed", _) => "the dataset was processed".to_string(),
        (_, Some(e)) => e.clone(),
        (s, None) => format!("processing is {s}; follow the task"),
    };
    Ok(created(ProcessView {
        task_id: t.task_id.clone(),
        status: t.status.as_str().into(),
        dataset_id: d.dataset_id.clone(),
        version_id: v.version_id.clone(),
        output_path: format!("/api/v1/datasets/versions/{}", v.version_id),
        splits,
        message,
        processed_at: t
            .finished_at
            .filter(|_| t.status.as_str() == "completed")
            .map(iso_millis),
    }))
}
