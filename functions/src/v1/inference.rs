//! The seeds' inference calls on the engine: on a deployment (seed 003 §6.3–6.6: chat,
//! completion, embedding, batch), by model (seed 002: models, generate, history), and seed 004's
//! `generate` and `generate/batch`. One mechanism runs them all ([`Job`]); each route differs
//! only in how it reads its request and shapes its answer.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maas_sidecar_client::llm::{
    ChatMessage, FinishReason, GenerateError, ModelState, Prompt, SamplingParams, TokenLogprob,
};
use maas_sidecar_client::EventStream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::deployments::{owned, served};
use super::envelope::{ok, ApiError, ApiJson, ApiJsonPair, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::params::{page, Parameters};
use super::users::Pagination;
use super::validate;
use crate::inference::observe::transcript;
use crate::inference::Call;
use crate::inference::Recorded;
use crate::openai::stream::{gather_all, sse, Chunks, Usage};
use crate::state::AppState;

/// Most items in one batch.
pub const MAX_BATCH: usize = 32;
/// Most messages in one conversation, and characters in one message or prompt.
const MAX_MESSAGES: usize = 256;
const MAX_TEXT: usize = 256 * 1024;
/// Most choices (seed 004's `num_return_sequences`) per prompt.
const MAX_SEQUENCES: u32 = 8;

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

#[derive(Deserialize, Serialize, ToSchema, Clone, Debug)]
pub struct MessageIn {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    #[schema(pattern = "^(system|developer|user|assistant|tool)$")]
    pub role: String,
    #[schema(max_length = 262144)]
    pub content: String,
}

/// One generation: which model, what prompt, how, and what to call it in the records.
pub(super) struct Job {
    kind: &'static str,
    model: String,
    deployment_id: Option<String>,
    prompt: Prompt,
    params: SamplingParams,
    n: u32,
}

/// A job's answer, gathered.
struct Answer {
    id: String,
    texts: Vec<String>,
    finish_reasons: Vec<Option<FinishReason>>,
    usage: Usage,
}

/// The engine's refusals in the envelope.
fn refusal(e: GenerateError, prompt_field: &str) -> ApiError {
    match e {
        GenerateError::UnknownModel { .. } => ApiError::field(Code::Resource001, "model", "model not found"),
        GenerateError::Loading => ApiError::new(Code::ServiceUnavailable, "the model is loading; retry shortly"),
        GenerateError::QueueFull => ApiError::new(Code::TooManyRequests, "the model is busy; retry shortly"),
        GenerateError::ContextTooLong { .. } | GenerateError::BadPrompt { .. } => {
            ApiError::field(Code::Validation003, prompt_field, e.to_string())
        }
        GenerateError::Internal { message } => ApiError::internal(message),
    }
}

fn prompt_field(prompt: &Prompt) -> &'static str {
    match prompt {
        Prompt::Chat(_) => "messages",
        Prompt::Text(_) => "prompt",
    }
}

impl Target {
    /// A model by id, with no defaults.
    pub(super) fn model(model: String) -> Target {
        Target {
            model,
            deployment_id: None,
            defaults: Parameters::default(),
        }
    }
}

impl Job {
    /// One answer for `prompt` on `target`, recorded as `kind`.
    fn on(target: Target, kind: &'static str, prompt: Prompt, params: SamplingParams) -> Job {
        Job {
            kind,
            model: target.model,
            deployment_id: target.deployment_id,
            prompt,
            params,
            n: 1,
        }
    }

    pub(super) fn chat(target: Target, prompt: Prompt, params: SamplingParams) -> Job {
        Job::on(target, "chat", prompt, params)
    }

    fn call(&self, who: &Principal) -> Call {
        Call {
            owner: who.user.user_id.clone(),
            kind: self.kind,
            model: self.model.clone(),
            deployment_id: self.deployment_id.clone(),
            prompt: match &self.prompt {
                Prompt::Chat(m) => transcript(m),
                Prompt::Text(t) => t.clone(),
            },
        }
    }

    /// Starts the job: its streams, and its recording to wait for once they are dropped.
    pub(super) async fn start(
        self,
        state: &AppState,
        who: &Principal,
    ) -> Result<(Vec<EventStream>, Recorded), ApiError> {
        let field = prompt_field(&self.prompt);
        let call = self.call(who);
        crate::inference::generate(state, call, vec![self.prompt], &self.params, self.n)
            .await
            .map_err(|e| refusal(e, field))
    }

    async fn whole(self, state: &AppState, who: &Principal) -> Result<Answer, ApiError> {
        let (streams, recorded) = self.start(state, who).await?;
        let (choices, usage) = gather_all(streams)
            .await
            .map_err(|_| ApiError::new(Code::Internal, "the model failed while answering"))?;
        recorded.wait(state).await;
        Ok(Answer {
            id: uuid::Uuid::new_v4().to_string(),
            texts: choices.iter().map(|c| c.text.clone()).collect(),
            finish_reasons: choices.iter().map(|c| c.finish_reason).collect(),
            usage,
        })
    }
}

/// Checks a conversation and turns it into the engine's messages.
pub(super) fn messages(list: &[MessageIn], field: &str) -> Result<Vec<ChatMessage>, ApiError> {
    if list.is_empty() || list.len() > MAX_MESSAGES {
        return Err(ApiError::field(
            Code::Validation003,
            field,
            format!("{field} must hold 1 to {MAX_MESSAGES} messages"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            if !ROLES.contains(&m.role.as_str()) {
                let f = format!("{field}[{i}].role");
                return Err(ApiError::field(
                    Code::Validation003,
                    &f,
                    format!("{f} must be system, developer, user, assistant or tool"),
                ));
            }
            prompt_text(&format!("{field}[{i}].content"), &m.content, true)?;
            let role = if m.role == "developer" {
                "system"
            } else {
                m.role.as_str()
            };
            Ok(ChatMessage {
                role: role.into(),
                content: m.content.clone(),
            })
        })
        .collect()
}

/// A prompt or message: at most 256 KiB of characters, and not empty unless `may_be_empty`.
fn prompt_text(field: &str, text: &str, may_be_empty: bool) -> Result<(), ApiError> {
    if !may_be_empty && text.is_empty() {
        return Err(ApiError::field(
            Code::Validation001,
            field,
            format!("{field} is required"),
        ));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(ApiError::field(
            Code::Validation003,
            field,
            format!("{field} must be at most {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

/// The model and defaults behind a call: a deployment of the caller's, or a model by id.
pub(super) struct Target {
    model: String,
    deployment_id: Option<String>,
    defaults: Parameters,
}

pub(super) async fn deployment_target(state: &AppState, who: &Principal, id: &str) -> Result<Target, ApiError> {
    let d = owned(state, who, id).await?;
    let config: super::deployments::DeploymentConfig = serde_json::from_value(d.config.clone()).unwrap_or_default();
    Ok(Target {
        model: d.engine_model().to_string(),
        deployment_id: Some(d.deployment_id),
        defaults: config.inference_config,
    })
}

/// Answers a job whole, or as SSE when the parameters ask for a stream.
async fn answer(
    state: &AppState,
    who: &Principal,
    job: Job,
    stream: bool,
    shape: impl Fn(&Answer) -> Value,
) -> Result<Response, ApiError> {
    if stream {
        let (streams, recorded) = job.start(state, who).await?;
        let chunks = SeedChunks {
            id: uuid::Uuid::new_v4().to_string(),
        };
        return Ok(sse(streams, chunks, true, (recorded, state.clone())));
    }
    let answer = job.whole(state, who).await?;
    Ok(ok(shape(&answer)).into_response())
}

/// Seed 003 §6.3's stream: `{"id", "choices": [{"index", "delta": {"content"}}]}`, then
/// `{"id", "choices": [{"index", "finish_reason"}]}`, a usage chunk, and `[DONE]`.
struct SeedChunks {
    id: String,
}

impl Chunks for SeedChunks {
    fn chunk(&self, choices: Value) -> Value {
        json!({"id": self.id, "choices": choices})
    }
    fn opening(&self, _: u32) -> Option<Value> {
        None
    }
    fn delta(&self, index: u32, text: &str, _: Option<(&TokenLogprob, &[TokenLogprob])>) -> Value {
        self.chunk(json!([{"index": index, "delta": {"content": text}}]))
    }
    fn finish(&self, index: u32, reason: FinishReason) -> Value {
        self.chunk(json!([{"index": index, "finish_reason": reason.as_str()}]))
    }
}

fn reasons(a: &Answer, i: usize) -> Value {
    json!(a.finish_reasons[i].map(FinishReason::as_str))
}

fn chat_json(a: &Answer, model: &str, deployment_id: &Option<String>) -> Value {
    let choices: Vec<Value> = (0..a.texts.len())
        .map(|i| json!({"index": i, "message": {"role": "assistant", "content": a.texts[i]}, "finish_reason": reasons(a, i)}))
        .collect();
    json!({"id": a.id, "object": "chat.completion", "model": model, "deployment_id": deployment_id, "choices": choices, "usage": a.usage.json()})
}

fn completion_json(a: &Answer, model: &str, deployment_id: &Option<String>) -> Value {
    let choices: Vec<Value> = (0..a.texts.len())
        .map(|i| json!({"index": i, "text": a.texts[i], "finish_reason": reasons(a, i)}))
        .collect();
    json!({"id": a.id, "object": "text_completion", "model": model, "deployment_id": deployment_id, "choices": choices, "usage": a.usage.json()})
}

// ---- seed 003 §6.3–6.6: calls on a deployment ----

#[derive(Deserialize, ToSchema)]
pub struct ChatRequest {
    #[schema(max_length = 64)]
    pub deployment_id: String,
    #[schema(min_items = 1, max_items = 256)]
    pub messages: Vec<MessageIn>,
    /// Overrides the deployment's `inference_config`, field by field.
    #[serde(default)]
    pub parameters: Parameters,
}

#[derive(Deserialize, ToSchema)]
pub struct CompletionRequest {
    #[schema(max_length = 64)]
    pub deployment_id: String,
    #[schema(min_length = 1, max_length = 262144)]
    pub prompt: String,
    #[serde(default)]
    pub parameters: Parameters,
}

/// A chat answer (whole); with `stream` the answer is Server-Sent Events instead.
#[derive(Serialize, ToSchema)]
pub struct GenerationAnswer {
    pub id: String,
    pub object: String,
    pub model: String,
    pub deployment_id: Option<String>,
    pub choices: Vec<Value>,
    pub usage: Value,
}

/// The call's parameters over the target's defaults, checked; and whether to stream.
pub(super) fn params_of(target: &Target, parameters: &Parameters) -> Result<(SamplingParams, bool), ApiError> {
    let merged = parameters.over(&target.defaults);
    Ok((merged.sampling("parameters")?, merged.stream.unwrap_or(false)))
}

/// Chat with a deployment's model (seed 003 §6.3), whole or streamed.
#[utoipa::path(post, path = "/api/v1/inference/chat", tag = "inference", request_body = ChatRequest,
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, description = "The answer; Server-Sent Events when `stream` is on",
        content((super::envelope::Envelope<GenerationAnswer> = "application/json"), (String = "text/event-stream")))))]
pub async fn chat(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let messages = messages(&req.messages, "messages")?;
    let target = deployment_target(&state, &who, &req.deployment_id).await?;
    let (params, stream) = params_of(&target, &req.parameters)?;
    let (model, id) = (target.model.clone(), target.deployment_id.clone());
    let job = Job::on(target, "chat", Prompt::Chat(messages), params);
    answer(&state, &who, job, stream, |a| chat_json(a, &model, &id)).await
}

/// Complete a prompt with a deployment's model (seed 003 §6.4), whole or streamed.
#[utoipa::path(post, path = "/api/v1/inference/completion", tag = "inference", request_body = CompletionRequest,
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, description = "The answer; Server-Sent Events when `stream` is on",
        content((super::envelope::Envelope<GenerationAnswer> = "application/json"), (String = "text/event-stream")))))]
pub async fn completion(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    prompt_text("prompt", &req.prompt, false)?;
    let target = deployment_target(&state, &who, &req.deployment_id).await?;
    let (params, stream) = params_of(&target, &req.parameters)?;
    let (model, id) = (target.model.clone(), target.deployment_id.clone());
    let job = Job::on(target, "completion", Prompt::Text(req.prompt), params);
    answer(&state, &who, job, stream, |a| completion_json(a, &model, &id)).await
}

#[derive(Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    #[schema(max_length = 64)]
    pub deployment_id: String,
    /// 1 to 2,048 texts, none empty.
    #[schema(min_items = 1, max_items = 2048)]
    pub texts: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingAnswer {
    pub embeddings: Vec<Vec<f32>>,
    pub model: String,
    pub dimensions: usize,
    pub usage: EmbeddingUsage,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
    /// Texts cut at the model's maximum length.
    pub truncated: u32,
}

/// Embed texts with a deployment's embedding model (seed 003 §6.5).
#[utoipa::path(post, path = "/api/v1/inference/embedding", tag = "inference", request_body = EmbeddingRequest,
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, body = super::envelope::Envelope<EmbeddingAnswer>)))]
pub async fn embedding(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<EmbeddingRequest>,
) -> ApiResult<EmbeddingAnswer> {
    if req.texts.is_empty() || req.texts.len() > crate::openai::embeddings::MAX_INPUTS {
        return Err(ApiError::field(
            Code::Validation003,
            "texts",
            "texts must hold 1 to 2048 texts",
        ));
    }
    for (i, t) in req.texts.iter().enumerate() {
        prompt_text(&format!("texts[{i}]"), t, false)?;
    }
    let target = deployment_target(&state, &who, &req.deployment_id).await?;
    let out = crate::inference::embed(
        &state,
        &who.user.user_id,
        &target.model,
        target.deployment_id,
        req.texts,
    )
    .await
    .map_err(|e| match e {
        GenerateError::BadPrompt { message } => ApiError::field(Code::Validation003, "deployment_id", message),
        other => refusal(other, "texts"),
    })?;
    Ok(ok(EmbeddingAnswer {
        dimensions: out.vectors.first().map_or(0, Vec::len),
        embeddings: out.vectors,
        model: target.model,
        usage: EmbeddingUsage {
            prompt_tokens: out.prompt_tokens,
            total_tokens: out.prompt_tokens,
            truncated: out.truncated,
        },
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct BatchItem {
    /// The caller's name for the item, repeated in its result; its index when absent.
    #[schema(max_length = 128)]
    pub id: Option<String>,
    /// `chat` or `completion`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(chat|completion)$")]
    pub kind: String,
    pub data: BatchData,
}

#[derive(Deserialize, ToSchema)]
pub struct BatchData {
    /// For `chat`.
    #[schema(max_items = 256)]
    pub messages: Option<Vec<MessageIn>>,
    /// For `completion`.
    #[schema(max_length = 262144)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub parameters: Parameters,
}

#[derive(Deserialize, ToSchema)]
pub struct BatchRequest {
    #[schema(max_length = 64)]
    pub deployment_id: String,
    #[schema(min_items = 1, max_items = 32)]
    pub requests: Vec<BatchItem>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchAnswer {
    /// One per item, in order: `{id, type, success, data}` or `{id, type, success, error}`.
    pub results: Vec<Value>,
    pub succeeded: usize,
    pub failed: usize,
}

/// One batch item's job, checked; its error is the item's, not the batch's.
fn batch_job(target: &Target, item: &BatchItem, i: usize) -> Result<(Job, bool), ApiError> {
    let at = format!("requests[{i}].data");
    let prompt = match (item.kind.as_str(), &item.data.messages, &item.data.prompt) {
        ("chat", Some(m), _) => Prompt::Chat(messages(m, &format!("{at}.messages"))?),
        ("completion", _, Some(p)) => {
            prompt_text(&format!("{at}.prompt"), p, false)?;
            Prompt::Text(p.clone())
        }
        ("chat", None, _) => {
            return Err(ApiError::field(
                Code::Validation001,
                &format!("{at}.messages"),
                "a chat item needs messages",
            ))
        }
        ("completion", _, None) => {
            return Err(ApiError::field(
                Code::Validation001,
                &format!("{at}.prompt"),
                "a completion item needs a prompt",
            ))
        }
        _ => {
            let f = format!("requests[{i}].type");
            return Err(ApiError::field(
                Code::Validation003,
                &f,
                format!("{f} must be chat or completion"),
            ));
        }
    };
    let merged = item.data.parameters.over(&target.defaults);
    let target = Target {
        model: target.model.clone(),
        deployment_id: target.deployment_id.clone(),
        defaults: Parameters::default(),
    };
    let kind = if item.kind == "chat" { "chat" } else { "completion" };
    let job = Job::on(target, kind, prompt, merged.sampling(&format!("{at}.parameters"))?);
    Ok((job, item.kind == "chat"))
}

/// Runs chat and completion items on a deployment together (seed 003 §6.6); each item gets a
/// result or its own error.
#[utoipa::path(post, path = "/api/v1/inference/batch", tag = "inference", request_body = BatchRequest,
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, body = super::envelope::Envelope<BatchAnswer>)))]
pub async fn batch(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<BatchRequest>,
) -> ApiResult<BatchAnswer> {
    if req.requests.is_empty() || req.requests.len() > MAX_BATCH {
        return Err(ApiError::field(
            Code::Validation003,
            "requests",
            format!("requests must hold 1 to {MAX_BATCH} items"),
        ));
    }
    let target = deployment_target(&state, &who, &req.deployment_id).await?;
    let runs = req.requests.iter().enumerate().map(|(i, item)| {
        let (state, who, target) = (&state, &who, &target);
        async move {
            let name = item.id.clone().unwrap_or_else(|| i.to_string());
            let result = match batch_job(target, item, i) {
                Ok((job, is_chat)) => job.whole(state, who).await.map(|a| match is_chat {
                    true => chat_json(&a, &target.model, &target.deployment_id),
                    false => completion_json(&a, &target.model, &target.deployment_id),
                }),
                Err(e) => Err(e),
            };
            match result {
                Ok(data) => json!({"id": name, "type": item.kind, "success": true, "data": data}),
                Err(e) => json!({"id": name, "type": item.kind, "success": false, "error": e}),
            }
        }
    });
    let results = futures::future::join_all(runs).await;
    let succeeded = results.iter().filter(|r| r["success"] == true).count();
    Ok(ok(BatchAnswer {
        failed: results.len() - succeeded,
        succeeded,
        results,
    }))
}

// ---- seed 002: models, generate, history ----

#[derive(Serialize, ToSchema)]
pub struct ServedModel {
    pub id: String,
    /// `chat` or `embedding` (empty while loading).
    #[serde(rename = "type")]
    pub kind: String,
    /// `loading`, `ready` or `failed`.
    pub status: String,
    pub context_length: u32,
    pub dimensions: Option<u32>,
    /// Models the platform ships.
    pub built_in: bool,
    pub owned_by: String,
}

#[derive(Serialize, ToSchema)]
pub struct ServedModels {
    pub items: Vec<ServedModel>,
}

/// The models the engine serves (seed 002).
#[utoipa::path(get, path = "/api/v1/inference/models", tag = "inference",
    responses((status = 200, body = super::envelope::Envelope<ServedModels>)))]
pub async fn models(State(state): State<AppState>) -> ApiResult<ServedModels> {
    let items = served(&state)
        .await?
        .into_iter()
        .map(|m| ServedModel {
            status: m.status.as_str().into(),
            id: m.id,
            kind: m.kind,
            context_length: m.context,
            dimensions: m.dimensions,
            built_in: true,
            owned_by: "maas".into(),
        })
        .collect();
    Ok(ok(ServedModels { items }))
}

#[derive(Deserialize, ToSchema)]
pub struct GenerateRequest {
    /// A served model's id; or give `deployment_id`.
    #[schema(max_length = 128)]
    pub model: Option<String>,
    #[schema(max_length = 64)]
    pub deployment_id: Option<String>,
    /// Text to continue; or give `messages`.
    #[schema(max_length = 262144)]
    pub prompt: Option<String>,
    #[schema(max_items = 256)]
    pub messages: Option<Vec<MessageIn>>,
    #[serde(default)]
    pub parameters: Parameters,
}

/// Generate with a model or deployment (seed 002): a prompt is continued, messages are
/// answered as a chat.
#[utoipa::path(post, path = "/api/v1/inference/generate", tag = "inference", request_body = GenerateRequest,
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, description = "The answer; Server-Sent Events when `stream` is on",
        content((super::envelope::Envelope<GenerationAnswer> = "application/json"), (String = "text/event-stream")))))]
pub async fn generate(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    let target = match (&req.deployment_id, &req.model) {
        (Some(id), None) => deployment_target(&state, &who, id).await?,
        (None, Some(model)) => {
            validate::text("model", model, 128)?;
            Target::model(model.clone())
        }
        _ => {
            return Err(ApiError::field(
                Code::Validation001,
                "model",
                "give exactly one of model and deployment_id",
            ))
        }
    };
    let (prompt, is_chat) = match (&req.prompt, &req.messages) {
        (Some(p), None) => {
            prompt_text("prompt", p, false)?;
            (Prompt::Text(p.clone()), false)
        }
        (None, Some(m)) => (Prompt::Chat(messages(m, "messages")?), true),
        _ => {
            return Err(ApiError::field(
                Code::Validation001,
                "prompt",
                "give exactly one of prompt and messages",
            ))
        }
    };
    let (params, stream) = params_of(&target, &req.parameters)?;
    let (model, id) = (target.model.clone(), target.deployment_id.clone());
    let job = Job::on(target, "generate", prompt, params);
    answer(&state, &who, job, stream, |a| match is_chat {
        true => chat_json(a, &model, &id),
        false => completion_json(a, &model, &id),
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    #[param(minimum = 1, maximum = 100000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only calls to this model.
    pub model: Option<String>,
    /// `success` or `error`.
    pub status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    pub id: String,
    /// `chat`, `completion`, `embedding` or `generate`.
    #[serde(rename = "type")]
    pub kind: String,
    pub model: String,
    pub deployment_id: Option<String>,
    /// `success` or `error`.
    pub status: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub latency_ms: u64,
    /// The start of the prompt and of the answer (500 characters).
    pub prompt: String,
    pub output: String,
    pub error: Option<String>,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    pub pagination: Pagination,
    /// Days a call is kept.
    pub retention_days: u32,
}

/// The caller's own inference calls, newest first (seed 002).
#[utoipa::path(get, path = "/api/v1/inference/history", tag = "inference", params(HistoryQuery),
    responses((status = 200, body = super::envelope::Envelope<HistoryPage>)))]
pub async fn history(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<HistoryPage> {
    let (page, limit) = page(q.page, q.limit, 100_000)?;
    if let Some(s) = q.status.as_deref().filter(|s| !["success", "error"].contains(s)) {
        return Err(ApiError::field(
            Code::Validation003,
            "status",
            format!("status must be success or error, not {s:?}"),
        ));
    }
    let entries: Vec<_> = state
        .inference
        .repo
        .history(&who.user.user_id)
        .await?
        .into_iter()
        .filter(|e| q.model.as_ref().is_none_or(|m| &e.model == m))
        .filter(|e| q.status.as_ref().is_none_or(|s| &e.status == s))
        .collect();
    let total = entries.len();
    let items = entries
        .into_iter()
        .skip((page as usize - 1) * limit as usize)
        .take(limit as usize)
        .map(|e| HistoryItem {
            total_tokens: e.prompt_tokens + e.completion_tokens,
            created_at: super::envelope::iso(e.at_ms / 1000),
            id: e.id,
            kind: e.kind,
            model: e.model,
            deployment_id: e.deployment_id,
            status: e.status,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            latency_ms: e.latency_ms,
            prompt: e.prompt,
            output: e.output,
            error: e.error,
        })
        .collect();
    Ok(ok(HistoryPage {
        items,
        pagination: Pagination::new(page, limit, total),
        retention_days: state.inference.history_days,
    }))
}

// ---- seed 004: generate and generate/batch ----

/// Seed 004's generation fields, shared by `generate` and `generate/batch`.
#[derive(Deserialize, ToSchema, Debug)]
pub struct SeedFields {
    /// A served model's id; the built-in chat model when absent.
    #[schema(max_length = 128)]
    pub model_path: Option<String>,
    /// Most tokens to generate; 100 by default.
    #[schema(minimum = 1, maximum = 8192)]
    pub max_length: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    #[schema(minimum = 0, maximum = 1000)]
    pub top_k: Option<u32>,
    #[schema(minimum = 1, maximum = 8)]
    pub num_return_sequences: Option<u32>,
}

/// Seed 004's `generate` body: `prompt` and the [`SeedFields`] (read as [`ApiJsonPair`]).
#[derive(Deserialize, ToSchema, Debug)]
pub struct SeedGenerate {
    #[schema(min_length = 1, max_length = 262144)]
    pub prompt: String,
    #[serde(flatten)]
    #[allow(dead_code)]
    fields: Option<SeedFields>,
}

/// Seed 004's `generate/batch` body: `prompts` and the [`SeedFields`].
#[derive(Deserialize, ToSchema, Debug)]
pub struct SeedGenerateBatch {
    #[schema(min_items = 1, max_items = 32)]
    pub prompts: Vec<String>,
    #[serde(flatten)]
    #[allow(dead_code)]
    fields: Option<SeedFields>,
}

#[derive(Serialize, ToSchema)]
pub struct SeedGenerated {
    pub prompt: String,
    pub generated_texts: Vec<String>,
    pub model_path: String,
    /// Seconds.
    pub generation_time: f64,
    pub timestamp: String,
}

#[derive(Serialize, ToSchema)]
pub struct SeedPromptResult {
    pub prompt: String,
    pub generated_texts: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SeedGeneratedBatch {
    pub results: Vec<SeedPromptResult>,
    pub model_path: String,
    pub total_generation_time: f64,
    pub timestamp: String,
}

impl SeedFields {
    /// The model asked for, the engine's parameters with seed 004's defaults (temperature
    /// 0.7, top_p 0.9, top_k 50, 100 tokens), and the sequences per prompt.
    fn check(&self) -> Result<(Option<String>, SamplingParams, u32), ApiError> {
        let n = self.num_return_sequences.unwrap_or(1);
        if !(1..=MAX_SEQUENCES).contains(&n) {
            return Err(ApiError::field(
                Code::Validation003,
                "num_return_sequences",
                format!("num_return_sequences must be 1 to {MAX_SEQUENCES}"),
            ));
        }
        let params = Parameters {
            max_tokens: Some(self.max_length.unwrap_or(100)),
            temperature: Some(self.temperature.unwrap_or(0.7)),
            top_p: Some(self.top_p.unwrap_or(0.9)),
            top_k: Some(self.top_k.unwrap_or(50)),
            ..Parameters::default()
        };
        let params = params.sampling("").map_err(|mut e| {
            // Seed 004 names its fields at the top level; `max_tokens` is its `max_length`.
            for d in &mut e.details {
                d.field = d.field.trim_start_matches('.').replace("max_tokens", "max_length");
            }
            e
        })?;
        if let Some(m) = &self.model_path {
            validate::text("model_path", m, 128)?;
        }
        Ok((self.model_path.clone(), params, n))
    }
}

/// The model seed 004 means when it names none: the first ready chat model.
async fn default_model(state: &AppState, named: Option<String>) -> Result<String, ApiError> {
    if let Some(m) = named {
        return Ok(m);
    }
    let models = served(state).await?;
    if let Some(m) = models
        .iter()
        .find(|m| m.kind == "chat" && m.status == ModelState::Ready)
    {
        return Ok(m.id.clone());
    }
    if models.iter().any(|m| m.status == ModelState::Loading) {
        return Err(ApiError::new(
            Code::ServiceUnavailable,
            "the language model is loading; retry shortly",
        ));
    }
    Err(ApiError::field(
        Code::Resource001,
        "model_path",
        "no language model is served; name one in model_path",
    ))
}

async fn seed_generate_one(
    state: &AppState,
    who: &Principal,
    model: &str,
    prompt: &str,
    params: &SamplingParams,
    n: u32,
) -> Result<Vec<String>, ApiError> {
    let job = Job {
        n,
        ..Job::on(
            Target::model(model.to_string()),
            "generate",
            Prompt::Text(prompt.to_string()),
            params.clone(),
        )
    };
    Ok(job
        .whole(state, who)
        .await
        .map_err(|e| rename_model_field(e, "model_path"))?
        .texts)
}

fn rename_model_field(mut e: ApiError, to: &str) -> ApiError {
    for d in &mut e.details {
        if d.field == "model" {
            d.field = to.to_string();
        }
    }
    e
}

/// Seed 004's `POST /generate`: text for a prompt, with its fields and defaults.
#[utoipa::path(post, path = "/api/v1/generate", tag = "inference", request_body = SeedGenerate,
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, body = super::envelope::Envelope<SeedGenerated>)))]
pub async fn seed_generate(
    State(state): State<AppState>,
    who: Principal,
    ApiJsonPair(req, fields): ApiJsonPair<SeedGenerate, SeedFields>,
) -> ApiResult<SeedGenerated> {
    prompt_text("prompt", &req.prompt, false)?;
    let (model, params, n) = fields.check()?;
    let model = default_model(&state, model).await?;
    let started = std::time::Instant::now();
    let texts = seed_generate_one(&state, &who, &model, &req.prompt, &params, n).await?;
    Ok(ok(SeedGenerated {
        prompt: req.prompt,
        generated_texts: texts,
        model_path: model,
        generation_time: round_ms(started.elapsed()),
        timestamp: super::envelope::iso(maas_store::now_secs()),
    }))
}

fn round_ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Seed 004's `POST /generate/batch`: every prompt at once.
#[utoipa::path(post, path = "/api/v1/generate/batch", tag = "inference", request_body = SeedGenerateBatch,
    responses((status = 404, description = "No such deployment or model (another user's deployment is missing too)", body = super::envelope::ErrorBody), (status = 200, body = super::envelope::Envelope<SeedGeneratedBatch>)))]
pub async fn seed_generate_batch(
    State(state): State<AppState>,
    who: Principal,
    ApiJsonPair(req, fields): ApiJsonPair<SeedGenerateBatch, SeedFields>,
) -> ApiResult<SeedGeneratedBatch> {
    if req.prompts.is_empty() || req.prompts.len() > MAX_BATCH {
        return Err(ApiError::field(
            Code::Validation003,
            "prompts",
            format!("prompts must hold 1 to {MAX_BATCH} prompts"),
        ));
    }
    for (i, p) in req.prompts.iter().enumerate() {
        prompt_text(&format!("prompts[{i}]"), p, false)?;
    }
    let (model, params, n) = fields.check()?;
    let model = default_model(&state, model).await?;
    let started = std::time::Instant::now();
    let runs = req
        .prompts
        .iter()
        .map(|p| seed_generate_one(&state, &who, &model, p, &params, n));
    let texts = futures::future::try_join_all(runs).await?;
    Ok(ok(SeedGeneratedBatch {
        results: req
            .prompts
            .into_iter()
            .zip(texts)
            .map(|(prompt, generated_texts)| SeedPromptResult {
                prompt,
                generated_texts,
            })
            .collect(),
        model_path: model,
        total_generation_time: round_ms(started.elapsed()),
        timestamp: super::envelope::iso(maas_store::now_secs()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mistyped_seed_004_field_is_named_though_the_fields_are_shared() {
        use super::super::envelope::parse_json;
        let body = br#"{"prompt": "x", "max_length": "long"}"#;
        assert!(parse_json::<SeedGenerate>(body).is_ok(), "the prompt part reads alone");
        let e = parse_json::<SeedFields>(body).unwrap_err();
        assert_eq!(e.details[0].field, "max_length", "{e:?}");
        let e = parse_json::<SeedGenerateBatch>(br#"{"max_length": 3}"#).unwrap_err();
        assert_eq!(e.details[0].field, "prompts", "{e:?}");
    }
}
