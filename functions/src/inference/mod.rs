//! What every inference surface shares (OpenAI's `/v1`, the seeds' `/api/v1/inference`,
//! `/api/v1/generate`): calls observed once for metering, deployment counters and history.
//!
//! - `observe`: a call's streams watched to their end, then recorded.
//! - `metrics`: a deployment's counters and the percentiles read from them.
//! - `counters`: this process's counters per model, for `GET /metrics`.

pub mod counters;
pub mod metrics;
pub mod observe;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use maas_store::records::inference::InferenceRepo;

pub use observe::{Call, Outcome, Recorded};

use maas_sidecar_client::llm::{EmbedRequest, Embeddings, GenerateError, GenerateRequest, Prompt, SamplingParams};
use maas_sidecar_client::EventStream;

use crate::state::AppState;

pub struct InferenceState {
    pub repo: InferenceRepo,
    /// Days a call stays in its caller's history.
    pub history_days: u32,
    pub counters: counters::ModelCounters,
}

/// Starts `n` choices for each prompt, in order: prompt by prompt, choice `i` with `seed + i`.
/// The call is observed (metered, counted, kept in history) whether it starts or is refused.
pub async fn generate(
    state: &AppState,
    call: Call,
    prompts: Vec<Prompt>,
    params: &SamplingParams,
    n: u32,
) -> Result<(Vec<EventStream>, Recorded), GenerateError> {
    let engine = match crate::registry::serving::engine_model(state, &call.owner, &call.model).await {
        Ok(engine) => engine,
        Err(e) => {
            call.finish(state, Outcome::refused(&e)).await;
            return Err(e);
        }
    };
    let mut streams = Vec::with_capacity(prompts.len() * n as usize);
    for prompt in prompts {
        for i in 0..n {
            let req = GenerateRequest {
                model: engine.clone(),
                prompt: prompt.clone(),
                params: crate::openai::params::for_choice(params, i),
                user: call.owner.clone(),
            };
            match state.sidecar.generate(req).await {
                Ok(s) => streams.push(s),
                Err(e) => {
                    call.finish(state, Outcome::refused(&e)).await;
                    return Err(e);
                }
            }
        }
    }
    Ok(call.observe(state, streams, n as usize))
}

/// Embeds `texts` with `model` for `owner`, observed as one call.
pub async fn embed(
    state: &AppState,
    owner: &str,
    model: &str,
    deployment_id: Option<String>,
    texts: Vec<String>,
) -> Result<Embeddings, GenerateError> {
    let call = Call {
        owner: owner.to_string(),
        kind: "embedding",
        model: model.to_string(),
        deployment_id,
        prompt: texts.join("\n"),
    };
    let started = std::time::Instant::now();
    let result = match crate::registry::serving::engine_model(state, owner, model).await {
        Ok(engine) => {
            state
                .sidecar
                .embed(EmbedRequest {
                    model: engine,
                    inputs: texts,
                    user: owner.to_string(),
                })
                .await
        }
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(out) => Outcome {
            prompt_tokens: out.prompt_tokens as u64,
            latency_ms: started.elapsed().as_millis() as u64,
            ..Outcome::default()
        },
        Err(e) => Outcome {
            latency_ms: started.elapsed().as_millis() as u64,
            ..Outcome::refused(e)
        },
    };
    call.finish(state, outcome).await;
    result
}

/// `GET /metrics`: this process's counters in Prometheus' text format, for whoever holds the
/// system key (`Authorization: Bearer <key>`, compared in constant time).
pub async fn metrics_endpoint(State(state): State<AppState>, headers: HeaderMap) -> Response {
    use subtle::ConstantTimeEq;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(state.system_key.as_bytes())) {
        return (StatusCode::UNAUTHORIZED, "the system key is required\n").into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.inference.counters.prometheus(),
    )
        .into_response()
}
