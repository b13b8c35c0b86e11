//! Deployments (seed 003 §6.1–6.2): a model pinned with its default generation parameters and
//! the serving spec the seed shows. Create, list, detail, update, delete, `status` (from the
//! sidecar that holds the model) and `metrics` (the deployment's counters). At most 10 a user.

use axum::extract::State;
use maas_sidecar_client::llm::{LlmModelInfo, ModelState};
use maas_store::records::inference::{CreateError, Deployment, MAX_DEPLOYMENTS};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::accounts::Done;
use super::envelope::{created, iso, ok, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::params::Parameters;
use super::users::Pagination;
use super::validate;
use crate::inference::metrics::{self, DeploymentMetrics};
use crate::state::AppState;

#[derive(Deserialize, Serialize, ToSchema, Clone, Debug, Default)]
pub struct HardwareSpec {
    #[schema(max_length = 50)]
    pub gpu_type: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 16)]
    pub gpu_count: u32,
    #[schema(minimum = 1, maximum = 512)]
    pub cpu_cores: Option<u32>,
    /// Memory per replica, like `32GB` or `512MB`.
    #[schema(pattern = "^[0-9]{1,6}(MB|GB|TB|MiB|GiB|TiB)$")]
    pub memory: Option<String>,
}

#[derive(Deserialize, Serialize, ToSchema, Clone, Debug)]
pub struct AutoScaling {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 100)]
    pub min_replicas: u32,
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_replicas: u32,
    #[serde(default = "seventy")]
    #[schema(minimum = 1, maximum = 100)]
    pub target_cpu_utilization: u32,
}

impl Default for AutoScaling {
    fn default() -> Self {
        AutoScaling {
            enabled: false,
            min_replicas: 1,
            max_replicas: 1,
            target_cpu_utilization: 70,
        }
    }
}

fn one() -> u32 {
    1
}
fn seventy() -> u32 {
    70
}

/// The serving spec, recorded as given (the platform schedules by model, not by replica), and
/// the default parameters every call to the deployment starts from.
#[derive(Deserialize, Serialize, ToSchema, Clone, Debug)]
pub struct DeploymentConfig {
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 100)]
    pub replicas: u32,
    #[serde(default)]
    pub hardware_spec: HardwareSpec,
    #[serde(default)]
    pub auto_scaling: AutoScaling,
    #[serde(default)]
    pub inference_config: Parameters,
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        DeploymentConfig {
            replicas: 1,
            hardware_spec: HardwareSpec::default(),
            auto_scaling: AutoScaling::default(),
            inference_config: Parameters::default(),
        }
    }
}

impl DeploymentConfig {
    fn check(&self) -> Result<(), ApiError> {
        let range = |field: &str, v: u32, lo: u32, hi: u32| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ApiError::field(
                    Code::Validation003,
                    field,
                    format!("{field} must be {lo} to {hi}"),
                ))
            }
        };
        range("config.replicas", self.replicas, 1, 100)?;
        range("config.hardware_spec.gpu_count", self.hardware_spec.gpu_count, 0, 16)?;
        if let Some(c) = self.hardware_spec.cpu_cores {
            range("config.hardware_spec.cpu_cores", c, 1, 512)?;
        }
        if let Some(g) = &self.hardware_spec.gpu_type {
            validate::text("config.hardware_spec.gpu_type", g, 50)?;
        }
        if let Some(m) = &self.hardware_spec.memory {
            let digits = m.trim_end_matches(char::is_alphabetic);
            let unit = &m[digits.len()..];
            let ok = (1..=6).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && ["MB", "GB", "TB", "MiB", "GiB", "TiB"].contains(&unit);
            if !ok {
                return Err(ApiError::field(
                    Code::Validation002,
                    "config.hardware_spec.memory",
                    "memory must look like 32GB or 512MB",
                )
                .unprocessable());
            }
        }
        let a = &self.auto_scaling;
        range("config.auto_scaling.min_replicas", a.min_replicas, 1, 100)?;
        range("config.auto_scaling.max_replicas", a.max_replicas, a.min_replicas, 100)?;
        range(
            "config.auto_scaling.target_cpu_utilization",
            a.target_cpu_utilization,
            1,
            100,
        )?;
        self.inference_config.sampling("config.inference_config").map(drop)
    }
}

#[derive(Deserialize, ToSchema)]
pub struct NewDeployment {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// A served model's id, as `GET /api/v1/inference/models` lists them.
    #[schema(min_length = 1, max_length = 128)]
    pub model_id: String,
    #[schema(max_length = 64)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub config: Option<DeploymentConfig>,
    #[schema(max_length = 64)]
    pub project_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct DeploymentUpdate {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub model_id: Option<String>,
    #[schema(max_length = 64)]
    pub model_version: Option<String>,
    /// Replaces the whole configuration.
    pub config: Option<DeploymentConfig>,
}

#[derive(Serialize, ToSchema)]
pub struct DeploymentView {
    pub id: String,
    pub name: String,
    pub model_id: String,
    pub model_version: Option<String>,
    pub project_id: Option<String>,
    /// `pending`, `loading`, `ready` or `failed`: the model's state on the sidecar.
    pub status: String,
    pub config: DeploymentConfig,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeploymentPage {
    pub items: Vec<DeploymentView>,
    pub pagination: Pagination,
}

#[derive(Serialize, ToSchema)]
pub struct DeploymentStatus {
    pub deployment_id: String,
    pub model_id: String,
    /// `pending` (no sidecar holds the model yet), `loading`, `ready` or `failed`.
    pub status: String,
    pub replicas: Replicas,
    pub message: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Replicas {
    pub desired: u32,
    pub ready: u32,
}

#[derive(Serialize, ToSchema)]
pub struct MetricsView {
    pub deployment_id: String,
    #[serde(flatten)]
    pub metrics: DeploymentMetrics,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeploymentId {
    /// The deployment's id.
    pub deployment_id: String,
}

/// The caller's deployment `id`; another user's is missing, exactly like an unknown one.
pub async fn owned(state: &AppState, who: &Principal, id: &str) -> Result<Deployment, ApiError> {
    match state.inference.repo.deployment(id).await? {
        Some(d) if d.owner == who.user.user_id => Ok(d),
        _ => Err(ApiError::not_found("deployment")),
    }
}

/// The served models, in every state.
pub async fn served(state: &AppState) -> Result<Vec<LlmModelInfo>, ApiError> {
    state.sidecar.llm_models().await.map_err(ApiError::internal)
}

/// What a deployment of `model_id` runs: a model the engine serves by that id (a built-in), or a
/// registry model the caller may see, at `version` or its latest, which the engine is asked to
/// load now. Answers `(engine id when it differs, version)`.
async fn resolve(
    state: &AppState,
    who: &Principal,
    models: &[LlmModelInfo],
    model_id: &str,
    version: Option<String>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    if models.iter().any(|m| m.id == model_id) {
        return Ok((None, version));
    }
    use crate::registry::serving::{is_registry_id, ready_version, Unservable};
    let missing = || ApiError::field(Code::Resource001, "model_id", "model not found");
    if !is_registry_id(model_id) {
        return Err(missing());
    }
    match ready_version(state, &who.user.user_id, model_id, version).await {
        Ok((engine, version)) => Ok((Some(engine), Some(version))),
        Err(Unservable::Missing) => Err(missing()),
        Err(Unservable::NoVersion) => Err(ApiError::field(
            Code::Resource001,
            "model_version",
            "the model has no ready version by that name",
        )),
        Err(Unservable::Engine) => Err(ApiError::internal(format!("the engine cannot load {model_id}"))),
        Err(Unservable::Store(e)) => Err(e.into()),
    }
}

/// A deployment's status: its model's state, or `pending` while no sidecar holds it.
fn state_name(s: Option<ModelState>) -> &'static str {
    s.map_or("pending", ModelState::as_str)
}

fn model_state(models: &[LlmModelInfo], id: &str) -> Option<ModelState> {
    models.iter().find(|m| m.id == id).map(|m| m.status)
}

fn config_of(d: &Deployment) -> DeploymentConfig {
    serde_json::from_value(d.config.clone()).unwrap_or_default()
}

fn view(d: &Deployment, models: &[LlmModelInfo]) -> DeploymentView {
    DeploymentView {
        id: d.deployment_id.clone(),
        name: d.name.clone(),
        model_id: d.model_id.clone(),
        model_version: d.model_version.clone(),
        project_id: d.project_id.clone(),
        status: state_name(model_state(models, d.engine_model())).into(),
        config: config_of(d),
        created_at: iso(d.created_at),
        updated_at: iso(d.updated_at),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::field(Code::Validation001, "name", "name is required"));
    }
    validate::text("name", name, 100)
}

fn check_optional(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    value.map_or(Ok(()), |v| validate::text(field, v, max))
}

/// Deploys a served model with default parameters. A user holds at most 10 deployments.
#[utoipa::path(post, path = "/api/v1/inference/deployments", tag = "inference", request_body = NewDeployment,
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 409, description = "The caller holds 10 deployments already", body = super::envelope::ErrorBody), (status = 201, body = super::envelope::Envelope<DeploymentView>, links(
        ("GetDeployment" = (operation_id = "v1-inference-deployments-get", parameters(("deployment_id" = "$response.body#/data/id"))))
    ))))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<NewDeployment>,
) -> ApiResult<DeploymentView> {
    check_name(&req.name)?;
    validate::text("model_id", &req.model_id, 128)?;
    check_optional("model_version", req.model_version.as_deref(), 64)?;
    super::projects::check_member_of(&state, &who, req.project_id.as_deref()).await?;
    let config = req.config.unwrap_or_default();
    config.check()?;
    let models = served(&state).await?;
    let (engine_model, model_version) = resolve(&state, &who, &models, &req.model_id, req.model_version).await?;
    let now = maas_store::now_secs();
    let deployment = Deployment {
        deployment_id: uuid::Uuid::new_v4().to_string(),
        owner: who.user.user_id.clone(),
        name: req.name.trim().to_string(),
        model_id: req.model_id,
        model_version,
        engine_model,
        config: serde_json::to_value(&config).map_err(ApiError::internal)?,
        project_id: req.project_id,
        slot: 0,
        created_at: now,
        updated_at: now,
        ver: 0,
    };
    let deployment = state.inference.repo.create(deployment).await.map_err(|e| match e {
        CreateError::Full => ApiError::new(
            Code::Resource003,
            format!("at most {MAX_DEPLOYMENTS} deployments per user; delete one first"),
        ),
        CreateError::Store(e) => ApiError::from(e),
    })?;
    super::projects::recount(&state, "deployments", None, deployment.project_id.as_deref()).await;
    Ok(created(view(&deployment, &models)))
}

#[utoipa::path(get, path = "/api/v1/inference/deployments", tag = "inference", params(super::params::PageQuery),
    responses((status = 200, body = super::envelope::Envelope<DeploymentPage>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<super::params::PageQuery>,
) -> ApiResult<DeploymentPage> {
    let (page, limit) = super::params::page(q.page, q.limit, 1000)?;
    let all = state.inference.repo.deployments(&who.user.user_id).await?;
    let models = served(&state).await?;
    let items = all
        .iter()
        .skip((page as usize - 1) * limit as usize)
        .take(limit as usize)
        .map(|d| view(d, &models))
        .collect();
    Ok(ok(DeploymentPage {
        items,
        pagination: Pagination::new(page, limit, all.len()),
    }))
}

#[utoipa::path(get, path = "/api/v1/inference/deployments/{deployment_id}", tag = "inference", params(DeploymentId),
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, body = super::envelope::Envelope<DeploymentView>)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<DeploymentView> {
    let d = owned(&state, &who, &id).await?;
    Ok(ok(view(&d, &served(&state).await?)))
}

#[utoipa::path(put, path = "/api/v1/inference/deployments/{deployment_id}", tag = "inference", params(DeploymentId),
    request_body = DeploymentUpdate,
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, body = super::envelope::Envelope<DeploymentView>)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DeploymentUpdate>,
) -> ApiResult<DeploymentView> {
    let old = owned(&state, &who, &id).await?;
    let mut d = old.clone();
    if let Some(name) = &req.name {
        check_name(name)?;
        d.name = name.trim().to_string();
    }
    check_optional("model_version", req.model_version.as_deref(), 64)?;
    if let Some(config) = &req.config {
        config.check()?;
        d.config = serde_json::to_value(config).map_err(ApiError::internal)?;
    }
    let models = served(&state).await?;
    if req.model_id.is_some() || req.model_version.is_some() {
        let model = req.model_id.unwrap_or(d.model_id.clone());
        validate::text("model_id", &model, 128)?;
        // A new model starts from its own latest version unless the update names one.
        let version = match model == d.model_id {
            true => req.model_version.or(d.model_version.clone()),
            false => req.model_version,
        };
        (d.engine_model, d.model_version) = resolve(&state, &who, &models, &model, version).await?;
        d.model_id = model;
    }
    d.updated_at = maas_store::now_secs();
    let d = state
        .inference
        .repo
        .update(&old, &d)
        .await
        .map_err(super::profile::conflict_on_race)?;
    Ok(ok(view(&d, &served(&state).await?)))
}

#[utoipa::path(delete, path = "/api/v1/inference/deployments/{deployment_id}", tag = "inference", params(DeploymentId),
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, body = super::envelope::Envelope<Done>)))]
pub async fn delete(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<Done> {
    let d = owned(&state, &who, &id).await?;
    state
        .inference
        .repo
        .delete(&d)
        .await
        .map_err(super::profile::conflict_on_race)?;
    super::projects::recount(&state, "deployments", d.project_id.as_deref(), None).await;
    Ok(ok(Done { ok: true }))
}

#[utoipa::path(get, path = "/api/v1/inference/deployments/{deployment_id}/status", tag = "inference",
    params(DeploymentId), responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, body = super::envelope::Envelope<DeploymentStatus>)))]
pub async fn status(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<DeploymentStatus> {
    let d = owned(&state, &who, &id).await?;
    let s = model_state(&served(&state).await?, d.engine_model());
    let config = config_of(&d);
    let message = match s {
        None => Some("no sidecar holds the model yet".to_string()),
        Some(ModelState::Failed) => Some("the model failed to load; see the sidecar's log".to_string()),
        _ => None,
    };
    Ok(ok(DeploymentStatus {
        deployment_id: d.deployment_id,
        model_id: d.model_id,
        status: state_name(s).into(),
        replicas: Replicas {
            desired: config.replicas,
            // One sidecar serves every deployment of a model; it counts as one replica.
            ready: (s == Some(ModelState::Ready)) as u32,
        },
        message,
    }))
}

#[utoipa::path(get, path = "/api/v1/inference/deployments/{deployment_id}/metrics", tag = "inference",
    params(DeploymentId), responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, body = super::envelope::Envelope<MetricsView>)))]
pub async fn metrics(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<MetricsView> {
    let d = owned(&state, &who, &id).await?;
    let counters = state.inference.repo.counters(&d.deployment_id).await?;
    Ok(ok(MetricsView {
        deployment_id: d.deployment_id,
        metrics: metrics::view(&counters),
    }))
}
