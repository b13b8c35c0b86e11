//! The model registry (seed 003 §4; seed 002's and seed 004's `/models`): list, detail, create
//! (a multipart form with the files, or JSON for a model whose versions come later), update,
//! delete, versions, downloads, likes and clones.
//!
//! Everyone sees public models (built-ins among them) and their own private ones; another
//! user's private model answers 404, as a missing one does. Only the owner changes a model.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maas_store::records::registry::{Filter, ListRequest, Model, ModelVersion, Scope, SortField, PLATFORM_OWNER};
use maas_store::records::tasks::Task;
use maas_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::accounts::Done;
use super::envelope::{created, iso, ok, parse_json, ApiError, ApiPath, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::users::Pagination;
use crate::registry::form::{is_multipart, Form};
use crate::registry::uploads::{self, Completion, DeclaredFile, FileUpload};
use crate::registry::{self, signed, Upload};
use crate::state::AppState;

const TYPES: &[&str] = &[
    "llm",
    "embedding",
    "sgt",
    "classification",
    "vision",
    "audio",
    "multimodal",
    "other",
];
const MAX_TAGS: usize = 20;

#[derive(Serialize, ToSchema)]
pub struct Owner {
    pub id: String,
    pub username: String,
    pub organization: String,
}

/// A model as lists show it (seed 003 §4.1), with seed 004's `path`, `base_model` and `size_mb`.
#[derive(Serialize, ToSchema)]
pub struct ModelSummary {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub model_type: String,
    pub category: String,
    pub owner: Owner,
    pub visibility: String,
    pub license: Option<String>,
    pub tags: Vec<String>,
    pub latest_version: Option<String>,
    pub download_count: u64,
    pub like_count: u64,
    /// Where the latest version's files lie (seed 004).
    pub path: Option<String>,
    pub base_model: Option<String>,
    pub size_mb: u64,
    pub project_id: Option<String>,
    pub cloned_from: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ModelPage {
    pub models: Vec<ModelSummary>,
    pub pagination: Pagination,
    /// Pass as `cursor` for the next page: it costs one page, whatever the page number.
    pub next_cursor: Option<String>,
    /// Models on this page (seed 004).
    pub count: usize,
}

#[derive(Serialize, ToSchema)]
pub struct VersionView {
    pub version: String,
    pub description: String,
    pub file_size: u64,
    pub status: String,
    pub error: Option<String>,
    pub files: Vec<FileView>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: String,
    /// The task checking the files' digests, while the version is `validating`.
    pub task_id: Option<String>,
    /// Where to upload, while the version is `uploading` and was just started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadView>,
}

#[derive(Serialize, ToSchema)]
pub struct FileView {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Serialize, ToSchema)]
pub struct UsageExample {
    pub task: String,
    pub input: String,
    /// The call that runs it.
    #[schema(value_type = Object)]
    pub request: Value,
}

/// A model's detail (seed 003 §4.2).
#[derive(Serialize, ToSchema)]
pub struct ModelDetail {
    #[serde(flatten)]
    pub summary: ModelSummary,
    /// Read from the latest version's files: parameter count, format, tasks, hardware.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub versions: Vec<VersionView>,
    pub usage_examples: Vec<UsageExample>,
    /// Whether the caller likes it.
    pub liked: bool,
    /// The first version's upload, when the model was created with declared files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadView>,
}

/// What lists sort by (the handler checks the string against these).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SortName {
    CreatedAt,
    UpdatedAt,
    DownloadCount,
    LikeCount,
    Name,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OrderName {
    Asc,
    Desc,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum VisibilityName {
    Public,
    Private,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ModelTypeName {
    Llm,
    Embedding,
    Sgt,
    Classification,
    Vision,
    Audio,
    Multimodal,
    Other,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `llm`, `embedding`, `sgt`, ...
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub model_type: Option<String>,
    pub category: Option<String>,
    /// `public`, or `private` for the caller's own private models.
    #[param(value_type = Option<VisibilityName>)]
    pub visibility: Option<String>,
    /// Words that must all appear in the name, description or tags.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub search: Option<String>,
    /// `created_at` (default), `updated_at`, `download_count`, `like_count` or `name`.
    #[param(value_type = Option<SortName>)]
    pub sort: Option<String>,
    /// `desc` (default) or `asc`.
    #[param(value_type = Option<OrderName>)]
    pub order: Option<String>,
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ModelId {
    pub model_id: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ModelVersionId {
    pub model_id: String,
    pub version: String,
}

/// The JSON form of a new model: its description, with versions uploaded later.
#[derive(Deserialize, ToSchema)]
pub struct NewModel {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[serde(rename = "type")]
    #[schema(rename = "type", value_type = ModelTypeName)]
    pub model_type: String,
    #[schema(max_length = 64)]
    pub category: Option<String>,
    /// `private` (default) or `public`.
    #[schema(value_type = Option<VisibilityName>)]
    pub visibility: Option<String>,
    #[schema(max_length = 64)]
    pub license: Option<String>,
    #[schema(max_items = 20, value_type = Option<Vec<super::permissions::TagName>>)]
    pub tags: Option<Vec<String>>,
    #[schema(max_length = 128)]
    pub base_model: Option<String>,
    #[schema(max_length = 64)]
    pub project_id: Option<String>,
    /// The first version, `1.0.0` unless this says, when `files` are declared.
    #[schema(max_length = 64)]
    pub version: Option<String>,
    /// Files to upload through presigned URLs (see `POST /api/v1/models/{model_id}/versions`).
    #[schema(max_items = 3)]
    pub files: Option<Vec<DeclaredFile>>,
}

/// A version to upload through presigned URLs: declare each file's size and sha256, PUT the
/// parts to the URLs the answer gives, then call `.../complete`.
#[derive(Deserialize, ToSchema)]
pub struct NewUpload {
    #[schema(max_length = 64)]
    pub version: String,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[schema(min_items = 1, max_items = 3)]
    pub files: Vec<DeclaredFile>,
}

/// An upload under way: where to PUT each file's parts, until `expires_at`.
#[derive(Serialize, ToSchema)]
pub struct UploadView {
    pub version: String,
    pub status: String,
    pub expires_at: String,
    pub files: Vec<FileUpload>,
    /// `POST` the parts' ETags here when every part is up.
    pub complete_url: String,
}

/// The multipart form of a new model (seed 003 §4.3): the JSON fields as text (`tags` as a
/// JSON array or comma-separated), `version` (default `1.0.0`), and the files.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ModelForm {
    name: String,
    description: Option<String>,
    #[schema(rename = "type")]
    model_type: String,
    category: Option<String>,
    visibility: Option<String>,
    license: Option<String>,
    tags: Option<String>,
    version: Option<String>,
    /// GGUF or safetensors.
    #[schema(value_type = String, format = Binary)]
    model_file: Vec<u8>,
    /// `config.json`; required with safetensors.
    #[schema(value_type = Option<String>, format = Binary)]
    config_file: Option<Vec<u8>>,
    /// `tokenizer.json`.
    #[schema(value_type = Option<String>, format = Binary)]
    tokenizer_file: Option<Vec<u8>>,
}

/// A new version (seed 003 §4.4): `version` (semver), `description`, and the files.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VersionForm {
    version: String,
    description: Option<String>,
    #[schema(value_type = String, format = Binary)]
    model_file: Vec<u8>,
    #[schema(value_type = Option<String>, format = Binary)]
    config_file: Option<Vec<u8>>,
    #[schema(value_type = Option<String>, format = Binary)]
    tokenizer_file: Option<Vec<u8>>,
}

#[derive(Deserialize, ToSchema, Default)]
pub struct ModelUpdate {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[schema(max_length = 64)]
    pub category: Option<String>,
    pub visibility: Option<String>,
    #[schema(max_length = 64)]
    pub license: Option<String>,
    #[schema(max_items = 20, value_type = Option<Vec<super::permissions::TagName>>)]
    pub tags: Option<Vec<String>>,
    #[schema(max_length = 64)]
    pub project_id: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
pub struct CloneRequest {
    /// The clone's name; the original's when absent.
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    pub model_id: String,
    pub versions: Vec<VersionView>,
}

#[derive(Serialize, ToSchema)]
pub struct LikeState {
    pub model_id: String,
    pub liked: bool,
    pub like_count: u64,
}

/// The model, if the caller may see it; 404 otherwise, the same as a missing one.
async fn visible(state: &AppState, who: &Principal, id: &str) -> Result<Model, ApiError> {
    match state.registry.repo.get(id).await? {
        Some(m) if m.visible_to(&who.user.user_id) => Ok(m),
        _ => Err(ApiError::not_found("model")),
    }
}

/// The model, if the caller owns it: another user's public model is 403, a private one 404.
async fn owned(state: &AppState, who: &Principal, id: &str) -> Result<Model, ApiError> {
    let m = visible(state, who, id).await?;
    if m.owner != who.user.user_id {
        return Err(ApiError::forbidden("only the model's owner may change it"));
    }
    Ok(m)
}

/// SGT models are listed here, but kept by the SGT API: they change there.
fn not_sgt(m: &Model, what: &str) -> Result<(), ApiError> {
    if m.model_type == "sgt" {
        return Err(ApiError::new(
            Code::Resource002,
            format!("an SGT model is {what} through the SGT API, not here"),
        ));
    }
    Ok(())
}

/// Deletes an SGT model as `/sgt/public/delete_sgt_model` does, registry entry included.
async fn delete_sgt(state: &AppState, m: &Model) -> ApiResult<Done> {
    let field = |k: &str| {
        m.metadata
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    state
        .repo
        .delete_model(&m.owner, &field("app_name"), &field("sgt_name"))
        .await?;
    Ok(ok(Done { ok: true }))
}

/// The owners of a page of models, each read once.
async fn owners(state: &AppState, models: &[Model]) -> Result<HashMap<String, Owner>, ApiError> {
    let mut out = HashMap::new();
    for m in models {
        if out.contains_key(&m.owner) {
            continue;
        }
        let owner = if m.owner == PLATFORM_OWNER {
            Owner {
                id: PLATFORM_OWNER.into(),
                username: PLATFORM_OWNER.into(),
                organization: "maas".into(),
            }
        } else {
            let user = state.v1.repo.user(&m.owner).await?;
            Owner {
                id: m.owner.clone(),
                username: user.as_ref().map(|u| u.username.clone()).unwrap_or_default(),
                organization: user.map(|u| u.organization).unwrap_or_default(),
            }
        };
        out.insert(m.owner.clone(), owner);
    }
    Ok(out)
}

fn summary(m: &Model, owners: &mut HashMap<String, Owner>, size: u64) -> ModelSummary {
    let owner = owners.remove(&m.owner).unwrap_or(Owner {
        id: m.owner.clone(),
        username: String::new(),
        organization: String::new(),
    });
    let out = ModelSummary {
        id: m.model_id.clone(),
        name: m.name.clone(),
        description: m.description.clone(),
        model_type: m.model_type.clone(),
        category: m.category.clone(),
        owner: Owner {
            id: owner.id.clone(),
            username: owner.username.clone(),
            organization: owner.organization.clone(),
        },
        visibility: m.visibility.clone(),
        license: m.license.clone(),
        tags: m.tags.clone(),
        latest_version: m.latest_version.clone(),
        download_count: m.download_count,
        like_count: m.like_count,
        path: m
            .latest_version
            .as_ref()
            .map(|v| registry::version_folder(&m.model_id, v)),
        base_model: m.base_model.clone(),
        size_mb: size.div_ceil(1 << 20),
        project_id: m.project_id.clone(),
        cloned_from: m.cloned_from.clone(),
        created_at: iso(m.created_at / 1000),
        updated_at: iso(m.updated_at / 1000),
    };
    owners.insert(m.owner.clone(), owner);
    out
}

fn version_view(v: &ModelVersion) -> VersionView {
    VersionView {
        version: v.version.clone(),
        description: v.description.clone(),
        file_size: v.size(),
        status: v.status.clone(),
        error: v.error.clone(),
        files: v
            .files
            .iter()
            .map(|f| FileView {
                name: f.name.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
            })
            .collect(),
        metadata: v.metadata.clone(),
        created_at: iso(v.created_at / 1000),
        task_id: v.task_id.clone(),
        upload: None,
    }
}

fn size_of(m: &Model) -> u64 {
    m.metadata.get("size_bytes").and_then(Value::as_u64).unwrap_or(0)
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(Code::Validation003, field, message)
}

fn check_name(name: &str) -> Result<String, ApiError> {
    super::validate::name("name", name, 100)
}

fn check_tags(tags: &[String]) -> Result<Vec<String>, ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(bad("tags", format!("at most {MAX_TAGS} tags")));
    }
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim().to_lowercase();
        if t.is_empty() || t.chars().count() > 50 || t.chars().any(char::is_control) {
            return Err(bad("tags", "each tag must be 1 to 50 printable characters"));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// `tags` in a form: a JSON array of strings (as the seed writes it) or comma-separated words.
fn form_tags(raw: &str) -> Result<Vec<String>, ApiError> {
    if raw.trim_start().starts_with('[') {
        let tags: Vec<String> =
            serde_json::from_str(raw).map_err(|_| bad("tags", "tags must be a JSON array of strings"))?;
        return check_tags(&tags);
    }
    check_tags(
        &raw.split(',')
            .map(str::to_string)
            .filter(|t| !t.trim().is_empty())
            .collect::<Vec<_>>(),
    )
}

fn check_version(v: &str) -> Result<String, ApiError> {
    let parsed = semver::Version::parse(v.trim())
        .map_err(|_| bad("version", "version must be a semantic version, such as 1.0.0"))?;
    if v.len() > 64 {
        return Err(bad("version", "version must be at most 64 characters"));
    }
    Ok(parsed.to_string())
}

/// A new model's fields, from JSON or from a form's text fields.
fn new_model(req: NewModel, owner: &str) -> Result<Model, ApiError> {
    let name = check_name(&req.name)?;
    super::validate::one_of("type", &req.model_type, TYPES)?;
    let visibility = req.visibility.unwrap_or_else(|| "private".into());
    super::validate::one_of("visibility", &visibility, &["public", "private"])?;
    let description = req.description.unwrap_or_default();
    super::validate::prose("description", &description, 2000)?;
    for (field, value, max) in [
        ("category", &req.category, 64),
        ("license", &req.license, 64),
        ("base_model", &req.base_model, 128),
        ("project_id", &req.project_id, 64),
    ] {
        if let Some(v) = value {
            super::validate::text(field, v, max)?;
        }
    }
    let now = maas_store::now_millis();
    Ok(Model {
        model_id: uuid::Uuid::new_v4().to_string(),
        owner: owner.into(),
        name,
        description,
        model_type: req.model_type,
        category: req.category.unwrap_or_default(),
        visibility,
        license: req.license,
        tags: check_tags(&req.tags.unwrap_or_default())?,
        latest_version: None,
        download_count: 0,
        like_count: 0,
        metadata: json!({}),
        project_id: req.project_id,
        cloned_from: None,
        base_model: req.base_model,
        created_at: now,
        updated_at: now,
        ver: 0,
    })
}

fn required_file(form: &mut Form) -> Result<Upload, ApiError> {
    let weights = form
        .take_file("model_file")?
        .ok_or_else(|| ApiError::field(Code::Validation001, "model_file", "model_file is required"))?;
    Ok(Upload {
        weights,
        config: form.take_file("config_file")?,
        tokenizer: form.take_file("tokenizer_file")?,
    })
}

/// The model's metadata from a checked upload: the header's, with the total size.
fn upload_metadata(checked: &registry::Checked, model_type: &str, total: u64) -> Value {
    let mut m = registry::header::metadata(&checked.header, model_type, checked.weight_bytes());
    m["size_bytes"] = json!(total);
    m
}

/// Lists the models the caller may see, filtered, sorted and paged through the listing index.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", params(ListQuery),
    responses((status = 200, body = super::envelope::Envelope<ModelPage>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<ModelPage> {
    let (page, limit) = super::params::page(q.page, q.limit, 10_000)?;
    let sort = match q.sort.as_deref() {
        None => SortField::CreatedAt,
        Some(s) => SortField::parse(s).ok_or_else(|| {
            bad(
                "sort",
                "sort must be created_at, updated_at, download_count, like_count or name",
            )
        })?,
    };
    let order = q.order.as_deref().unwrap_or("desc");
    super::validate::one_of("order", order, &["asc", "desc"])?;
    let scope = match q.visibility.as_deref() {
        None => Scope::Visible,
        Some("public") => Scope::Public,
        Some("private") => Scope::Private,
        Some(_) => return Err(bad("visibility", "visibility must be public or private")),
    };
    let search = q.search.as_deref().unwrap_or_default();
    super::validate::text("search", search, 200)?;
    let filter = Filter {
        model_type: q.model_type.filter(|t| !t.is_empty()),
        category: q.category.filter(|c| !c.is_empty()),
        search: search.split_whitespace().map(str::to_lowercase).collect(),
    };
    let cursor = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let skip = if cursor.is_some() {
        0
    } else {
        (page as usize - 1) * limit as usize
    };
    let user = who.user.user_id.as_str();
    let total = state.registry.repo.count(user, scope, &filter).await?;
    let req = ListRequest {
        user,
        scope,
        filter,
        sort,
        descending: order == "desc",
        cursor,
        skip,
        limit: limit as usize,
    };
    let listed = state.registry.repo.list(&req).await.map_err(|e| match e {
        StoreError::Corrupt(..) => bad("cursor", "cursor is not from a list with this sort"),
        e => e.into(),
    })?;
    let mut owners = owners(&state, &listed.models).await?;
    let models: Vec<ModelSummary> = listed
        .models
        .iter()
        .map(|m| summary(m, &mut owners, size_of(m)))
        .collect();
    Ok(ok(ModelPage {
        count: models.len(),
        models,
        pagination: Pagination::new(page, limit, total as usize),
        next_cursor: listed.next_cursor.map(|c| encode_cursor(&c)),
    }))
}

fn encode_cursor(sk: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sk)
}

fn decode_cursor(c: &str) -> Result<String, ApiError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad("cursor", "cursor is not one this API gave"))?;
    String::from_utf8(bytes).map_err(|_| bad("cursor", "cursor is not one this API gave"))
}

/// A model's detail, with its versions and the metadata its files declare.
#[utoipa::path(get, path = "/api/v1/models/{model_id}", tag = "models", params(ModelId),
    responses((status = 404, description = "No such model (another user's private model is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<ModelDetail>)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ModelDetail> {
    let m = visible(&state, &who, &id).await?;
    Ok(ok(detail(&state, &who, &m).await?))
}

async fn detail(state: &AppState, who: &Principal, m: &Model) -> Result<ModelDetail, ApiError> {
    let mut versions = state.registry.repo.versions(&m.model_id).await?;
    versions.sort_by(|a, b| maas_store::records::registry::semver_cmp(&b.version, &a.version));
    let mut owners = owners(state, std::slice::from_ref(m)).await?;
    Ok(ModelDetail {
        summary: summary(m, &mut owners, size_of(m)),
        metadata: m.metadata.clone(),
        versions: versions.iter().map(version_view).collect(),
        usage_examples: examples(m),
        liked: state.registry.repo.liked(&m.model_id, &who.user.user_id).await?,
        upload: None,
    })
}

/// How to call the model: the request that runs each task it serves.
fn examples(m: &Model) -> Vec<UsageExample> {
    match m.model_type.as_str() {
        "llm" => vec![UsageExample {
            task: "text-generation".into(),
            input: "Hello, who are you?".into(),
            request: json!({"method": "POST", "path": "/v1/chat/completions",
                "body": {"model": m.model_id, "messages": [{"role": "user", "content": "Hello, who are you?"}]}}),
        }],
        "embedding" => vec![UsageExample {
            task: "feature-extraction".into(),
            input: "The quick brown fox".into(),
            request: json!({"method": "POST", "path": "/v1/embeddings",
                "body": {"model": m.model_id, "input": "The quick brown fox"}}),
        }],
        _ => vec![],
    }
}

/// Creates a model: from a multipart form with its files (the first version, `1.0.0` unless
/// `version` says), or from JSON, with versions uploaded later.
#[utoipa::path(post, path = "/api/v1/models", tag = "models",
    request_body(content((ModelForm = "multipart/form-data"), (NewModel = "application/json"))),
    responses((status = 404, description = "No such project (`project_id`)", body = super::envelope::ErrorBody),
        (status = 422, description = "A file that is not a GGUF or safetensors model, or whose header disagrees with its size", body = super::envelope::ErrorBody),
        (status = 201, body = super::envelope::Envelope<ModelDetail>, links(
        ("GetModel" = (operation_id = "v1-models-get", parameters(("model_id" = "$response.body#/data/id"))))))))]
pub async fn create(State(state): State<AppState>, who: Principal, req: Request) -> ApiResult<ModelDetail> {
    let owner = who.user.user_id.clone();
    if !is_multipart(&req) {
        let body = <crate::v1::envelope::ApiBody as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
        let mut req: NewModel = parse_json(&body.0)?;
        let (files, version) = (req.files.take(), req.version.take());
        let m = new_model(req, &owner)?;
        super::projects::check_member_of(&state, &who, m.project_id.as_deref()).await?;
        let Some(files) = files else {
            state.registry.repo.create(&m, &[]).await?;
            return created_model(&state, &who, &m).await;
        };
        let version = check_version(version.as_deref().unwrap_or("1.0.0"))?;
        uploads::check_declared(&files)?;
        state
            .registry
            .check_quota(&owner, files.iter().map(|f| f.size).sum())
            .await?;
        let (v, files) = uploads::start(&state, &m.model_id, &version, "Initial release".into(), &files).await?;
        if let Err(e) = state.registry.repo.create(&m, std::slice::from_ref(&v)).await {
            uploads::abort(&*state.registry.blobs, &v.files).await;
            return Err(e.into());
        }
        super::projects::recount(&state, "models", None, m.project_id.as_deref()).await;
        let mut out = detail(&state, &who, &m).await?;
        out.upload = Some(upload_view(&v, files));
        return Ok(created(out));
    }
    let mut form = Form::read(req).await?;
    let text = |name: &str| form.text(name).map(|v| v.map(str::to_string));
    let fields = NewModel {
        name: text("name")?.ok_or_else(|| ApiError::field(Code::Validation001, "name", "name is required"))?,
        description: text("description")?,
        model_type: text("type")?.ok_or_else(|| ApiError::field(Code::Validation001, "type", "type is required"))?,
        category: text("category")?,
        visibility: text("visibility")?,
        license: text("license")?,
        tags: text("tags")?.map(|t| form_tags(&t)).transpose()?,
        base_model: text("base_model")?,
        project_id: text("project_id")?,
        version: None,
        files: None,
    };
    let version = check_version(text("version")?.as_deref().unwrap_or("1.0.0"))?;
    let mut m = new_model(fields, &owner)?;
    super::projects::check_member_of(&state, &who, m.project_id.as_deref()).await?;
    let checked = registry::check(required_file(&mut form)?)?;
    state.registry.check_quota(&owner, checked.total_bytes()).await?;
    let v = checked
        .store(
            &*state.registry.blobs,
            &m.model_id,
            &version,
            "Initial release".into(),
            json!({}),
        )
        .await?;
    m.metadata = upload_metadata(&checked, &m.model_type, v.size());
    let v = ModelVersion {
        metadata: m.metadata.clone(),
        ..v
    };
    m.latest_version = Some(version);
    if let Err(e) = state.registry.repo.create(&m, std::slice::from_ref(&v)).await {
        registry::remove(&*state.registry.blobs, &v.files).await;
        return Err(e.into());
    }
    state.registry.count_storage(&owner, v.size() as i64).await;
    created_model(&state, &who, &m).await
}

/// Answers a model just written, counted in its project.
async fn created_model(state: &AppState, who: &Principal, m: &Model) -> ApiResult<ModelDetail> {
    super::projects::recount(state, "models", None, m.project_id.as_deref()).await;
    Ok(created(detail(state, who, m).await?))
}

/// Changes a model's description, tags, license or visibility. Owner only.
#[utoipa::path(put, path = "/api/v1/models/{model_id}", tag = "models", params(ModelId), request_body = ModelUpdate,
    responses((status = 404, description = "No such model (another user's private model is missing too)", body = super::envelope::ErrorBody),
        (status = 403, description = "Another user's public model", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<ModelDetail>)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    super::envelope::ApiJson(req): super::envelope::ApiJson<ModelUpdate>,
) -> ApiResult<ModelDetail> {
    let before = owned(&state, &who, &id).await?;
    not_sgt(&before, "changed")?;
    super::projects::check_member_of(&state, &who, req.project_id.as_deref()).await?;
    let name = req.name.as_deref().map(check_name).transpose()?;
    if let Some(v) = &req.visibility {
        super::validate::one_of("visibility", v, &["public", "private"])?;
    }
    if let Some(d) = &req.description {
        super::validate::prose("description", d, 2000)?;
    }
    for (field, value) in [
        ("category", &req.category),
        ("license", &req.license),
        ("project_id", &req.project_id),
    ] {
        if let Some(v) = value {
            super::validate::text(field, v, 64)?;
        }
    }
    let tags = req.tags.as_deref().map(check_tags).transpose()?;
    let m = state
        .registry
        .repo
        .update(&id, |old| {
            let mut m = old.clone();
            m.name = name.clone().unwrap_or(m.name);
            m.description = req.description.clone().unwrap_or(m.description);
            m.category = req.category.clone().unwrap_or(m.category);
            m.visibility = req.visibility.clone().unwrap_or(m.visibility);
            m.license = req.license.clone().or(m.license);
            m.tags = tags.clone().unwrap_or(m.tags);
            m.project_id = req.project_id.clone().or(m.project_id);
            m.updated_at = maas_store::now_millis();
            Some((m, vec![]))
        })
        .await
        .map_err(super::profile::conflict_on_race)?
        .ok_or_else(|| ApiError::not_found("model"))?;
    super::projects::recount(&state, "models", before.project_id.as_deref(), m.project_id.as_deref()).await;
    Ok(ok(detail(&state, &who, &m).await?))
}

/// Deletes a model with its versions and files. Owner only; refused while a deployment uses it.
#[utoipa::path(delete, path = "/api/v1/models/{model_id}", tag = "models", params(ModelId),
    responses((status = 404, description = "No such model (another user's private model is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "A deployment or job uses the model", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<Done>)))]
pub async fn delete(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<Done> {
    let m = owned(&state, &who, &id).await?;
    if m.model_type == "sgt" {
        return delete_sgt(&state, &m).await;
    }
    let users = state.registry.repo.users_of(&id).await?;
    if !users.is_empty() {
        return Err(ApiError::new(
            Code::Resource003,
            format!("the model is in use by {}; delete those first", users.join(", ")),
        ));
    }
    let versions = state
        .registry
        .repo
        .delete(&m)
        .await
        .map_err(super::profile::conflict_on_race)?;
    let blobs = &*state.registry.blobs;
    let mut freed = 0;
    for v in &versions {
        match v.status.as_str() {
            "ready" => {
                freed += v.size();
                registry::remove(blobs, &v.files).await;
            }
            "uploading" => uploads::abort(blobs, &v.files).await,
            _ => {}
        }
    }
    state.registry.count_storage(&m.owner, -(freed as i64)).await;
    super::projects::recount(&state, "models", m.project_id.as_deref(), None).await;
    Ok(ok(Done { ok: true }))
}

/// Uploads a new version (semver, unique per model) as a multipart form. Owner only.
#[utoipa::path(post, path = "/api/v1/models/{model_id}/versions", tag = "models", params(ModelId),
    request_body(content((VersionForm = "multipart/form-data"))),
    responses((status = 404, description = "No such model (another user's private model is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "The model has this version already", body = super::envelope::ErrorBody),
        (status = 422, description = "A file that is not a GGUF or safetensors model", body = super::envelope::ErrorBody),
        (status = 201, body = super::envelope::Envelope<VersionView>)))]
pub async fn create_version(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> ApiResult<VersionView> {
    let m = owned(&state, &who, &id).await?;
    not_sgt(&m, "given versions")?;
    if !is_multipart(&req) {
        return start_upload(&state, &m.owner, &id, req).await;
    }
    let mut form = Form::read(req).await?;
    let version = form
        .text("version")?
        .ok_or_else(|| ApiError::field(Code::Validation001, "version", "version is required"))?;
    let version = check_version(version)?;
    let description = form.text("description")?.unwrap_or_default().to_string();
    super::validate::prose("description", &description, 2000)?;
    if state.registry.repo.version(&id, &version).await?.is_some() {
        return Err(taken(&version));
    }
    let checked = registry::check(required_file(&mut form)?)?;
    state.registry.check_quota(&m.owner, checked.total_bytes()).await?;
    let v = checked
        .store(&*state.registry.blobs, &id, &version, description, json!({}))
        .await?;
    let metadata = upload_metadata(&checked, &m.model_type, v.size());
    let v = ModelVersion {
        metadata: metadata.clone(),
        ..v
    };
    let added = state
        .registry
        .repo
        .add_version(&v, |old| {
            let mut m = old.clone();
            let newer = old
                .latest_version
                .as_deref()
                .is_none_or(|l| maas_store::records::registry::semver_cmp(&v.version, l).is_gt());
            if newer {
                m.latest_version = Some(v.version.clone());
                m.metadata = metadata.clone();
            }
            m.updated_at = maas_store::now_millis();
            m
        })
        .await;
    match added {
        Ok(Some(_)) => {
            state.registry.count_storage(&m.owner, v.size() as i64).await;
            Ok(created(version_view(&v)))
        }
        Ok(None) => {
            registry::remove(&*state.registry.blobs, &v.files).await;
            Err(ApiError::not_found("model"))
        }
        // The blobs under this version's folder are the other writer's now: leave them.
        Err(StoreError::ConditionFailed) => Err(taken(&version)),
        Err(e) => {
            registry::remove(&*state.registry.blobs, &v.files).await;
            Err(e.into())
        }
    }
}

/// `POST .../versions` with JSON: starts a presigned upload of the declared files.
async fn start_upload(state: &AppState, owner: &str, id: &str, req: Request) -> ApiResult<VersionView> {
    let body = <crate::v1::envelope::ApiBody as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
    let req: NewUpload = parse_json(&body.0)?;
    let version = check_version(&req.version)?;
    let description = req.description.unwrap_or_default();
    super::validate::prose("description", &description, 2000)?;
    uploads::check_declared(&req.files)?;
    state
        .registry
        .check_quota(owner, req.files.iter().map(|f| f.size).sum())
        .await?;
    if state.registry.repo.version(id, &version).await?.is_some() {
        return Err(taken(&version));
    }
    let (v, files) = uploads::start(state, id, &version, description, &req.files).await?;
    if let Err(e) = state.registry.repo.start_version(&v).await {
        uploads::abort(&*state.registry.blobs, &v.files).await;
        return Err(match e {
            StoreError::ConditionFailed => taken(&version),
            e => e.into(),
        });
    }
    let mut view = version_view(&v);
    view.upload = Some(upload_view(&v, files));
    Ok(created(view))
}

fn upload_view(v: &ModelVersion, files: Vec<FileUpload>) -> UploadView {
    UploadView {
        version: v.version.clone(),
        status: v.status.clone(),
        expires_at: iso(v.expires_at.unwrap_or_default()),
        files,
        complete_url: format!("/api/v1/models/{}/versions/{}/complete", v.model_id, v.version),
    }
}

/// Finishes a presigned upload: joins the parts, then checks each file's size and the
/// weights' header (a failure is 422, and the version `failed`). The version turns
/// `validating` while a `model_validation` task checks each file's sha256 in a sidecar; it
/// then turns `ready`, or `failed` with the reason.
#[utoipa::path(post, path = "/api/v1/models/{model_id}/versions/{version}/complete", tag = "models",
    params(ModelVersionId), request_body = Completion,
    responses((status = 404, description = "No such model or version (another user's private model is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "The version is not uploading", body = super::envelope::ErrorBody),
        (status = 422, description = "A part is missing, or a file is not what was declared (the version is then failed)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<VersionView>)))]
pub async fn complete_upload(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((id, version)): ApiPath<(String, String)>,
    super::envelope::ApiJson(done): super::envelope::ApiJson<Completion>,
) -> ApiResult<VersionView> {
    let m = owned(&state, &who, &id).await?;
    let v = state
        .registry
        .repo
        .version(&id, &version)
        .await?
        .ok_or_else(|| ApiError::not_found("version"))?;
    if v.status != "uploading" {
        return Err(ApiError::new(
            Code::Resource002,
            format!("version {version} is {}, not uploading", v.status),
        ));
    }
    if v.expires_at.is_some_and(|e| e <= maas_store::now_secs()) {
        return Err(ApiError::new(Code::Resource002, "the upload expired; start another").unprocessable());
    }
    let blobs = &*state.registry.blobs;
    uploads::join(blobs, &v, &done).await?;
    let (files, header) = match uploads::verify(blobs, &v).await? {
        Ok(checked) => checked,
        Err(uploads::Rejected(reason)) => {
            registry::remove(blobs, &v.files).await;
            let failed = ModelVersion {
                status: "failed".into(),
                error: Some(reason.clone()),
                ..v.clone()
            };
            state.registry.repo.finish_version(&v, &failed, Model::clone).await?;
            return Err(ApiError::field(Code::Validation004, "files", reason).unprocessable());
        }
    };
    let weights = files
        .iter()
        .find(|f| f.name.starts_with("model."))
        .map_or(0, |f| f.size);
    let total: u64 = files.iter().map(|f| f.size).sum();
    let mut metadata = registry::header::metadata(&header, &m.model_type, weights);
    metadata["size_bytes"] = json!(total);
    let task = Task::new(
        &m.owner,
        registry::uploads::VALIDATION,
        &format!("check {}@{}", m.name, v.version),
        json!({"model_id": v.model_id, "version": v.version}),
    );
    let validating = ModelVersion {
        status: "validating".into(),
        files,
        metadata,
        task_id: Some(task.task_id.clone()),
        expires_at: None,
        ttl: None,
        ..v.clone()
    };
    state
        .registry
        .repo
        .finish_version_with(&v, &validating, vec![task.create_write()?])
        .await
        .map_err(super::profile::conflict_on_race)?;
    let ready = validating;
    Ok(ok(version_view(&ready)))
}

fn taken(version: &str) -> ApiError {
    ApiError::field(
        Code::Resource002,
        "version",
        format!("version {version} exists already"),
    )
}

/// A model's versions, newest first.
#[utoipa::path(get, path = "/api/v1/models/{model_id}/versions", tag = "models", params(ModelId),
    responses((status = 404, description = "No such model (another user's private model is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<VersionList>)))]
pub async fn list_versions(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<VersionList> {
    visible(&state, &who, &id).await?;
    let mut versions = state.registry.repo.versions(&id).await?;
    versions.sort_by(|a, b| maas_store::records::registry::semver_cmp(&b.version, &a.version));
    Ok(ok(VersionList {
        model_id: id,
        versions: versions.iter().map(version_view).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// Which of the version's files: the weights when absent.
    pub file: Option<String>,
}

/// Redirects to an expiring URL of a version's file and counts one download.
#[utoipa::path(get, path = "/api/v1/models/{model_id}/versions/{version}/download", tag = "models",
    params(ModelVersionId, DownloadQuery),
    responses((status = 404, description = "No such model, version or file", body = super::envelope::ErrorBody),
        (status = 302, description = "To the file, for 15 minutes")))]
pub async fn download(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((id, version)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DownloadQuery>,
) -> Result<Response, ApiError> {
    visible(&state, &who, &id).await?;
    let v = state
        .registry
        .repo
        .version(&id, &version)
        .await?
        .filter(|v| v.status == "ready")
        .ok_or_else(|| ApiError::not_found("version"))?;
    let file = match q.file.as_deref() {
        None => v.files.first(),
        Some(name) => v.files.iter().find(|f| f.name == name),
    }
    .ok_or_else(|| ApiError::not_found("file"))?;
    let url = signed::download_url(&state, &file.blob).await?;
    state.registry.repo.count_download(&id).await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
}

/// Likes a model; liking twice counts once.
#[utoipa::path(post, path = "/api/v1/models/{model_id}/like", tag = "models", params(ModelId),
    responses((status = 404, description = "No such model (another user's private model is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<LikeState>)))]
pub async fn like(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<LikeState> {
    set_like(&state, &who, &id, true).await
}

/// Takes a like back.
#[utoipa::path(delete, path = "/api/v1/models/{model_id}/like", tag = "models", params(ModelId),
    responses((status = 404, description = "No such model (another user's private model is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<LikeState>)))]
pub async fn unlike(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<LikeState> {
    set_like(&state, &who, &id, false).await
}

async fn set_like(state: &AppState, who: &Principal, id: &str, like: bool) -> ApiResult<LikeState> {
    visible(state, who, id).await?;
    let m = state
        .registry
        .repo
        .set_like(id, &who.user.user_id, like)
        .await
        .map_err(super::profile::conflict_on_race)?
        .ok_or_else(|| ApiError::not_found("model"))?;
    Ok(ok(LikeState {
        model_id: m.model_id,
        liked: like,
        like_count: m.like_count,
    }))
}

/// Copies a model the caller can see, with its ready versions and their files, into a new
/// private model of the caller's.
#[utoipa::path(post, path = "/api/v1/models/{model_id}/clone", tag = "models", params(ModelId), request_body = CloneRequest,
    responses((status = 404, description = "No such model (another user's private model is missing too)", body = super::envelope::ErrorBody),
        (status = 201, body = super::envelope::Envelope<ModelDetail>)))]
pub async fn clone(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    body: crate::v1::envelope::ApiBody,
) -> ApiResult<ModelDetail> {
    let req: CloneRequest = if body.0.is_empty() {
        CloneRequest::default()
    } else {
        parse_json(&body.0)?
    };
    let source = visible(&state, &who, &id).await?;
    not_sgt(&source, "cloned here (use /sgt/public/clone_sgt_model_to_mine)")?;
    let name = req
        .name
        .as_deref()
        .map(check_name)
        .transpose()?
        .unwrap_or(source.name.clone());
    let now = maas_store::now_millis();
    let copy = Model {
        model_id: uuid::Uuid::new_v4().to_string(),
        owner: who.user.user_id.clone(),
        name,
        visibility: "private".into(),
        download_count: 0,
        like_count: 0,
        project_id: None,
        cloned_from: Some(source.model_id.clone()),
        created_at: now,
        updated_at: now,
        ver: 0,
        ..source.clone()
    };
    let versions: Vec<ModelVersion> = state
        .registry
        .repo
        .versions(&id)
        .await?
        .into_iter()
        .filter(|v| v.status == "ready")
        .collect();
    let total: u64 = versions.iter().map(ModelVersion::size).sum();
    state.registry.check_quota(&copy.owner, total).await?;
    let mut written = Vec::new();
    let mut copies = Vec::new();
    for v in versions {
        let folder = registry::version_folder(&copy.model_id, &v.version);
        let mut files = Vec::new();
        for f in &v.files {
            let blob = format!("{folder}{}", f.name);
            if let Err(e) = state.registry.blobs.copy(&f.blob, &blob).await {
                registry::remove(&*state.registry.blobs, &written).await;
                return Err(e.into());
            }
            let file = maas_store::records::registry::VersionFile { blob, ..f.clone() };
            written.push(file.clone());
            files.push(file);
        }
        copies.push(ModelVersion {
            model_id: copy.model_id.clone(),
            files,
            ver: 0,
            ..v
        });
    }
    if let Err(e) = state.registry.repo.create(&copy, &copies).await {
        registry::remove(&*state.registry.blobs, &written).await;
        return Err(e.into());
    }
    state.registry.count_storage(&copy.owner, total as i64).await;
    Ok(created(detail(&state, &who, &copy).await?))
}
