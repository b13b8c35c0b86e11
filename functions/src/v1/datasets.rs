//! Datasets (seed 002 数据集, seed 003 §5.1, seed 004 §4): upload, list, detail, delete.
//!
//! - A small file comes in a `multipart/form-data` form and is validated within the request:
//!   the dataset is `ready` at once, or the answer is 422 with the line-numbered errors and
//!   nothing is kept.
//! - A large file (up to 10 GB) is declared in JSON (`size`, `sha256`), PUT to presigned part
//!   URLs, and completed; a `dataset_validation` task then reads it as a stream in a sidecar,
//!   and the dataset turns `ready` or `failed` with the errors.

use axum::extract::{Request, State};
use bytes::Bytes;
use maas_datasets::Format;
use maas_store::records::datasets::Dataset;
use maas_store::records::tasks::Task;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::accounts::Done;
use super::envelope::{created, iso_millis, ok, parse_json, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::params::{page, page_of};
use super::users::Pagination;
use super::validate;
use crate::registry::form::{is_json, is_multipart, Form};
use crate::registry::uploads::{self, CompletedPart, PartUrl, UPLOAD_TTL};
use crate::state::AppState;

/// The largest dataset file.
pub const MAX_DATASET: u64 = 10_000_000_000;
/// What the samples are; the quality check knows the fields each one needs.
pub const TYPES: &[&str] = &[
    "instruction",
    "conversation",
    "text",
    "classification",
    "preference",
    "other",
];
const FORMATS: &[&str] = &["json", "jsonl", "csv"];
const SORTS: &[&str] = &["created_at", "updated_at", "name", "size", "samples_count"];
/// The task that validates a presigned upload.
pub const VALIDATION: &str = "dataset_validation";

#[derive(Serialize, ToSchema)]
pub struct LineErrorView {
    pub line: u64,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetUpload {
    pub part_size: u64,
    /// PUT each part's bytes to its URL and keep the `ETag` header of the answer.
    pub parts: Vec<PartUrl>,
    /// POST the parts' numbers and ETags here.
    pub complete_url: String,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetView {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `json`, `jsonl` or `csv`.
    pub format: String,
    /// `uploading`, `validating`, `ready` or `failed`.
    pub status: String,
    /// Bytes.
    pub size: u64,
    pub size_mb: f64,
    pub sha256: String,
    pub samples_count: u64,
    /// Every field name the records use, in the order first seen.
    pub fields: Vec<String>,
    pub error_count: u64,
    /// The first (at most 100) invalid records.
    pub errors: Vec<LineErrorView>,
    /// Why the dataset failed, in one line.
    pub error: Option<String>,
    /// The first records (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub preview: Option<Vec<Value>>,
    pub project_id: Option<String>,
    /// The task validating an upload.
    pub task_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// For a presigned upload just started: where to send the parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<DatasetUpload>,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetPage {
    pub items: Vec<DatasetView>,
    pub pagination: Pagination,
}

/// A dataset file in a form (seed 003 §5.1, seed 004 `/datasets/upload`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DatasetForm {
    name: String,
    description: Option<String>,
    /// `instruction`, `conversation`, `text`, `classification`, `preference` or `other`
    /// (default).
    #[schema(rename = "type")]
    kind: Option<String>,
    /// `json`, `jsonl` or `csv`; by default from the file name's extension, else `json`.
    format: Option<String>,
    project_id: Option<String>,
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// A dataset uploaded through presigned URLs: declare the file, then PUT its parts.
#[derive(Deserialize, ToSchema)]
pub struct NewDataset {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[serde(rename = "type")]
    #[schema(
        rename = "type",
        pattern = "^(instruction|conversation|text|classification|preference|other)$"
    )]
    pub kind: Option<String>,
    #[schema(pattern = "^(json|jsonl|csv)$")]
    pub format: String,
    /// Bytes, 1 to 10,000,000,000.
    #[schema(minimum = 1, maximum = 10000000000_u64)]
    pub size: u64,
    /// Hex SHA-256 of the whole file.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    #[schema(max_length = 64)]
    pub project_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct DatasetCompletion {
    #[schema(max_items = 10000)]
    pub parts: Vec<CompletedPart>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DatasetListQuery {
    #[param(minimum = 1, maximum = 1000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[serde(rename = "type")]
    #[param(rename = "type", max_length = 32)]
    pub kind: Option<String>,
    #[param(pattern = "^(json|jsonl|csv)$")]
    pub format: Option<String>,
    #[param(pattern = "^(uploading|validating|ready|failed)$")]
    pub status: Option<String>,
    #[param(max_length = 64)]
    pub project_id: Option<String>,
    /// Words that must all appear in the name or description.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub search: Option<String>,
    /// `created_at` (default), `updated_at`, `name`, `size` or `samples_count`.
    #[param(pattern = "^(created_at|updated_at|name|size|samples_count)$")]
    pub sort: Option<String>,
    /// `desc` (default) or `asc`.
    #[param(pattern = "^(asc|desc)$")]
    pub order: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DatasetId {
    pub dataset_id: String,
}

fn view(d: &Dataset, preview: bool) -> DatasetView {
    DatasetView {
        id: d.dataset_id.clone(),
        name: d.name.clone(),
        description: d.description.clone(),
        kind: d.kind.clone(),
        format: d.format.clone(),
        status: d.status.clone(),
        size: d.size,
        size_mb: (d.size as f64 / 1e6 * 100.0).round() / 100.0,
        sha256: d.sha256.clone(),
        samples_count: d.samples_count,
        fields: d.fields.clone(),
        error_count: d.error_count,
        errors: d
            .errors
            .iter()
            .map(|e| LineErrorView {
                line: e.line,
                message: e.message.clone(),
            })
            .collect(),
        error: d.error.clone(),
        preview: preview.then(|| d.preview.clone()),
        project_id: d.project_id.clone(),
        task_id: d.task_id.clone(),
        created_at: iso_millis(d.created_at),
        updated_at: iso_millis(d.updated_at),
        upload: None,
    }
}

/// The caller's dataset; another user's answers 404, as a missing one does.
pub async fn owned(state: &AppState, who: &Principal, id: &str) -> Result<Dataset, ApiError> {
    if !validate::could_be_id(id) {
        return Err(ApiError::not_found("dataset"));
    }
    state
        .datasets
        .get(&who.user.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset"))
}

/// The fields every new dataset has, checked.
struct Fields {
    name: String,
    description: String,
    kind: String,
    format: Format,
    project_id: Option<String>,
}

impl Fields {
    async fn check(
        state: &AppState,
        who: &Principal,
        name: &str,
        description: Option<String>,
        kind: Option<String>,
        format: &str,
        project_id: Option<String>,
    ) -> Result<Fields, ApiError> {
        let name = validate::name("name", name, 100)?;
        let description = description.unwrap_or_default();
        validate::prose("description", &description, 2000)?;
        let kind = kind.unwrap_or_else(|| "other".into());
        validate::one_of("type", &kind, TYPES)?;
        validate::one_of("format", format, FORMATS)?;
        super::projects::check_member_of(state, who, project_id.as_deref()).await?;
        Ok(Fields {
            name,
            description,
            kind,
            format: Format::parse(format).expect("checked"),
            project_id,
        })
    }

    fn dataset(self, owner: &str, size: u64, sha256: String) -> Dataset {
        let id = uuid::Uuid::now_v7().to_string();
        let now = maas_store::now_millis();
        Dataset {
            blob: format!("datasets/{id}/data.{}", self.format.as_str()),
            dataset_id: id,
            owner: owner.into(),
            name: self.name,
            description: self.description,
            kind: self.kind,
            format: self.format.as_str().into(),
            status: "uploading".into(),
            size,
            sha256,
            upload: None,
            part_size: 0,
            samples_count: 0,
            fields: Vec::new(),
            errors: Vec::new(),
            error_count: 0,
            error: None,
            preview: Vec::new(),
            project_id: self.project_id,
            task_id: None,
            created_at: now,
            updated_at: now,
            expires_at: None,
            ttl: None,
            ver: 0,
        }
    }
}

/// Creates a dataset: a form with the file (validated now), or JSON declaring a large file
/// (answered with part URLs). Seed 004's `POST /api/v1/datasets/upload` is this handler.
#[utoipa::path(post, path = "/api/v1/datasets", tag = "datasets",
    request_body(content((DatasetForm = "multipart/form-data"), (NewDataset = "application/json"))),
    responses((status = 403, description = "The upload would exceed the caller's storage quota", body = super::envelope::ErrorBody),
        (status = 404, description = "No such project (`project_id`)", body = super::envelope::ErrorBody),
        (status = 422, description = "The file is not valid in its format (the details name the lines)", body = super::envelope::ErrorBody),
        (status = 201, body = super::envelope::Envelope<DatasetView>, links(
        ("GetDataset" = (operation_id = "v1-datasets-get", parameters(("dataset_id" = "$response.body#/data/id"))))))))]
pub async fn create(State(state): State<AppState>, who: Principal, req: Request) -> ApiResult<DatasetView> {
    if !is_multipart(&req) {
        if !is_json(&req) {
            let mut e = ApiError::field(
                Code::Validation002,
                "content-type",
                "send the file as multipart/form-data, or declare a large one in application/json",
            );
            e.status = Some(axum::http::StatusCode::BAD_REQUEST);
            return Err(e);
        }
        return start_upload(&state, &who, req).await;
    }
    let mut form = Form::read(req).await?;
    let text = |name: &str| form.text(name).map(|v| v.map(str::to_string));
    let name = text("name")?.ok_or_else(|| ApiError::field(Code::Validation001, "name", "name is required"))?;
    let (description, kind, project_id) = (text("description")?, text("type")?, text("project_id")?);
    let format = text("format")?;
    let file = form
        .take_file("file")?
        .ok_or_else(|| ApiError::field(Code::Validation001, "file", "file is required").unprocessable())?;
    let format = format.unwrap_or_else(|| format_of(&file.file_name).into());
    let fields = Fields::check(&state, &who, &name, description, kind, &format, project_id).await?;
    let owner = who.user.user_id.clone();
    state.registry.check_quota(&owner, file.bytes.len() as u64).await?;
    let summary = maas_datasets::validate(fields.format, &file.bytes[..], &mut |_| {}).map_err(ApiError::internal)?;
    let blank = fields.dataset(&owner, file.bytes.len() as u64, String::new());
    let d = blank.validated(&summary);
    if d.status != "ready" {
        return Err(invalid_file(&d));
    }
    store_ready(&state, &d, file.bytes).await?;
    Ok(created(view(&d, true)))
}

/// Seed 004's `POST /api/v1/datasets/upload`: the same operation as `POST /api/v1/datasets`.
#[utoipa::path(post, path = "/api/v1/datasets/upload", tag = "datasets",
    request_body(content((DatasetForm = "multipart/form-data"), (NewDataset = "application/json"))),
    responses((status = 403, description = "The upload would exceed the caller's storage quota", body = super::envelope::ErrorBody),
        (status = 404, description = "No such project (`project_id`)", body = super::envelope::ErrorBody),
        (status = 422, description = "The file is not valid in its format (the details name the lines)", body = super::envelope::ErrorBody),
        (status = 201, body = super::envelope::Envelope<DatasetView>)))]
pub async fn upload(state: State<AppState>, who: Principal, req: Request) -> ApiResult<DatasetView> {
    create(state, who, req).await
}

/// The format a file's name suggests.
fn format_of(file_name: &str) -> &'static str {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
        "jsonl"
    } else if lower.ends_with(".csv") {
        "csv"
    } else {
        "json"
    }
}

/// A 422 that names the first invalid lines.
fn invalid_file(d: &Dataset) -> ApiError {
    let message = d.error.clone().unwrap_or_else(|| "the file is not a dataset".into());
    let mut e = ApiError::new(Code::Validation004, message);
    e.details = d
        .errors
        .iter()
        .map(|l| super::envelope::FieldError {
            field: format!("file:{}", l.line),
            message: format!("line {}: {}", l.line, l.message),
        })
        .collect();
    e.unprocessable()
}

/// Writes a validated file and its record; a failure part-way removes the file.
async fn store_ready(state: &AppState, d: &Dataset, bytes: Bytes) -> Result<(), ApiError> {
    let blobs = &state.registry.blobs;
    blobs.put(&d.blob, bytes).await?;
    if let Err(e) = state.datasets.create(d, Vec::new()).await {
        blobs.delete(&d.blob).await.ok();
        return Err(e.into());
    }
    state.registry.count_storage(&d.owner, d.size as i64).await;
    super::projects::recount(state, "datasets", None, d.project_id.as_deref()).await;
    Ok(())
}

/// `POST /api/v1/datasets` with JSON: starts a presigned upload of the declared file.
async fn start_upload(state: &AppState, who: &Principal, req: Request) -> ApiResult<DatasetView> {
    let body = <super::envelope::ApiBody as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
    let req: NewDataset = parse_json(&body.0)?;
    let fields = Fields::check(
        state,
        who,
        &req.name,
        req.description,
        req.kind,
        &req.format,
        req.project_id,
    )
    .await?;
    if req.size == 0 || req.size > MAX_DATASET {
        return Err(ApiError::field(
            Code::Validation003,
            "size",
            format!("size must be 1 to {MAX_DATASET} bytes"),
        ));
    }
    if req.sha256.len() != 64 || !req.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ApiError::field(
            Code::Validation003,
            "sha256",
            "sha256 must be 64 lower-case hex digits",
        ));
    }
    let owner = who.user.user_id.clone();
    state.registry.check_quota(&owner, req.size).await?;
    let mut d = fields.dataset(&owner, req.size, req.sha256);
    let started = uploads::start_blob(state, &d.blob, d.size).await?;
    let expires = maas_store::now_secs() + UPLOAD_TTL.as_secs() as i64;
    d.upload = Some(started.upload.clone());
    d.part_size = started.part_size;
    d.expires_at = Some(expires);
    // A day past the URLs, so that a late complete call is still told what happened.
    d.ttl = Some(expires + 24 * 3600);
    if let Err(e) = state.datasets.create(&d, Vec::new()).await {
        state.registry.blobs.abort_upload(&d.blob, &started.upload).await.ok();
        return Err(e.into());
    }
    super::projects::recount(state, "datasets", None, d.project_id.as_deref()).await;
    let mut out = view(&d, false);
    out.upload = Some(DatasetUpload {
        part_size: started.part_size,
        parts: started.parts,
        complete_url: format!("/api/v1/datasets/{}/complete", d.dataset_id),
        expires_at: super::envelope::iso(expires),
    });
    Ok(created(out))
}

/// Finishes a presigned upload: joins the parts and queues the validation task. The dataset
/// is `validating`; follow `task_id` at `/api/v1/tasks/{task_id}`.
#[utoipa::path(post, path = "/api/v1/datasets/{dataset_id}/complete", tag = "datasets", params(DatasetId),
    request_body = DatasetCompletion,
    responses((status = 404, description = "No such dataset (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "The dataset is not uploading", body = super::envelope::ErrorBody),
        (status = 422, description = "A part is missing or its ETag is wrong, or the upload expired", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<DatasetView>)))]
pub async fn complete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(done): ApiJson<DatasetCompletion>,
) -> ApiResult<DatasetView> {
    let d = owned(&state, &who, &id).await?;
    let Some(upload) = d.upload.clone().filter(|_| d.status == "uploading") else {
        return Err(ApiError::new(
            Code::Resource002,
            format!("dataset {id} is {}, not uploading", d.status),
        ));
    };
    if d.expires_at.is_some_and(|e| e <= maas_store::now_secs()) {
        return Err(ApiError::new(Code::Resource002, "the upload expired; start another").unprocessable());
    }
    uploads::join_blob(&*state.registry.blobs, &d.blob, &upload, &done.parts, ("parts", "file")).await?;
    let task = Task::new(
        &d.owner,
        VALIDATION,
        &format!("validate {}", d.name),
        json!({"dataset_id": d.dataset_id}),
    );
    let next = Dataset {
        status: "validating".into(),
        upload: None,
        task_id: Some(task.task_id.clone()),
        expires_at: None,
        ttl: None,
        ..d.clone()
    };
    let saved = state
        .datasets
        .update(&d, &next, vec![task.create_write()?])
        .await
        .map_err(super::profile::conflict_on_race)?;
    Ok(ok(view(&saved, false)))
}

/// The caller's datasets.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets", params(DatasetListQuery),
    responses((status = 200, body = super::envelope::Envelope<DatasetPage>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<DatasetListQuery>,
) -> ApiResult<DatasetPage> {
    let (p, limit) = page(q.page, q.limit, 1000)?;
    let sort = q.sort.as_deref().unwrap_or("created_at");
    validate::one_of("sort", sort, SORTS)?;
    let order = q.order.as_deref().unwrap_or("desc");
    validate::one_of("order", order, &["asc", "desc"])?;
    if let Some(f) = &q.format {
        validate::one_of("format", f, FORMATS)?;
    }
    if let Some(s) = &q.status {
        validate::one_of("status", s, &["uploading", "validating", "ready", "failed"])?;
    }
    validate::at_most("type", q.kind.as_deref().unwrap_or_default(), 32)?;
    validate::at_most("project_id", q.project_id.as_deref().unwrap_or_default(), 64)?;
    validate::text("search", q.search.as_deref().unwrap_or_default(), 200)?;
    let words: Vec<String> = q
        .search
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let mut all = state.datasets.list(&who.user.user_id).await?;
    all.retain(|d| {
        let text = format!("{} {}", d.name, d.description).to_lowercase();
        q.kind.as_deref().is_none_or(|k| d.kind == k)
            && q.format.as_deref().is_none_or(|f| d.format == f)
            && q.status.as_deref().is_none_or(|s| d.status == s)
            && q.project_id
                .as_deref()
                .is_none_or(|p| d.project_id.as_deref() == Some(p))
            && words.iter().all(|w| text.contains(w))
    });
    all.sort_by(|a, b| {
        let by = match sort {
            "name" => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
            "size" => a.size.cmp(&b.size),
            "samples_count" => a.samples_count.cmp(&b.samples_count),
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            _ => a.created_at.cmp(&b.created_at),
        };
        by.then_with(|| a.dataset_id.cmp(&b.dataset_id))
    });
    if order == "desc" {
        all.reverse();
    }
    let (items, pagination) = page_of(all, p, limit);
    Ok(ok(DatasetPage {
        items: items.iter().map(|d| view(d, false)).collect(),
        pagination,
    }))
}

/// A dataset with a preview of its first records.
#[utoipa::path(get, path = "/api/v1/datasets/{dataset_id}", tag = "datasets", params(DatasetId),
    responses((status = 404, description = "No such dataset (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<DatasetView>)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<DatasetView> {
    let d = owned(&state, &who, &id).await?;
    Ok(ok(view(&d, true)))
}

/// Deletes a dataset, its versions and their files. One that a queued or running task works
/// on is 409.
#[utoipa::path(delete, path = "/api/v1/datasets/{dataset_id}", tag = "datasets", params(DatasetId),
    responses((status = 404, description = "No such dataset (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "A queued or running task uses the dataset", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<Done>)))]
pub async fn delete(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<Done> {
    let d = owned(&state, &who, &id).await?;
    if let Some(t) = super::tasks::busy_with(&state, &d.owner, "dataset_id", &d.dataset_id).await? {
        return Err(super::tasks::busy(&t, "dataset"));
    }
    for v in state.datasets.versions(&d.owner, Some(&d.dataset_id)).await? {
        super::dataset_versions::remove(&state, &v).await?;
    }
    state
        .datasets
        .delete(&d)
        .await
        .map_err(super::profile::conflict_on_race)?;
    let blobs = &state.registry.blobs;
    match &d.upload {
        Some(upload) => blobs.abort_upload(&d.blob, upload).await.ok(),
        None => blobs.delete(&d.blob).await.ok(),
    };
    if d.status == "ready" {
        state.registry.count_storage(&d.owner, -(d.size as i64)).await;
    }
    super::projects::recount(&state, "datasets", d.project_id.as_deref(), None).await;
    Ok(ok(Done { ok: true }))
}
