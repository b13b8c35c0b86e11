//! `GET /v1/models` and `GET /v1/models/{model}`: the models the engine serves.

use axum::extract::{Path, State};
use axum::Json;
use maas_sidecar_client::llm::{LlmModelInfo, ModelState};
use serde_json::{json, Value};

use super::error::OpenAiError;
use crate::state::AppState;

fn model_json(m: &LlmModelInfo) -> Value {
    json!({"id": m.id, "object": "model", "created": m.created, "owned_by": "maas"})
}

/// The models ready to serve.
async fn served(state: &AppState) -> Result<Vec<LlmModelInfo>, OpenAiError> {
    let models = state.sidecar.llm_models().await.map_err(|e| {
        tracing::error!(error = %e, "cannot list models");
        OpenAiError::internal()
    })?;
    Ok(models.into_iter().filter(|m| m.status == ModelState::Ready).collect())
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, OpenAiError> {
    let data: Vec<Value> = served(&state).await?.iter().map(model_json).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn retrieve(State(state): State<AppState>, Path(model): Path<String>) -> Result<Json<Value>, OpenAiError> {
    served(&state)
        .await?
        .iter()
        .find(|m| m.id == model)
        .map(|m| Json(model_json(m)))
        .ok_or_else(|| OpenAiError::model_not_found(&model))
}
