//! Registry models on the engine: a version is served as `{id}@{version}` from its folder in the
//! bucket. A caller names it so, or by the model's id alone (its latest version); either way the
//! caller must be allowed to see the model, and the engine is asked to load it.

use maas_sidecar_client::llm::{GenerateError, ModelState};
use maas_store::records::registry::Model;

use crate::state::AppState;

/// The engine id that `name` runs as for `owner`. Names that are not registry models (the
/// built-ins) pass unchanged; the engine knows them or answers that it does not.
pub async fn engine_model(state: &AppState, owner: &str, name: &str) -> Result<String, GenerateError> {
    let (id, version) = match name.rsplit_once('@') {
        Some((id, v)) => (id, Some(v)),
        None => (name, None),
    };
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(name.to_string());
    }
    let unknown = || GenerateError::UnknownModel {
        model: name.to_string(),
    };
    let model = registered(state, id)
        .await?
        .filter(|m| m.visible_to(owner))
        .ok_or_else(unknown)?;
    let version = version
        .map(str::to_string)
        .or(model.latest_version)
        .ok_or_else(unknown)?;
    let ready = state.registry.repo.version(id, &version).await.map_err(internal)?;
    if !ready.is_some_and(|v| v.status == "ready") {
        return Err(unknown());
    }
    let engine = super::engine_id(id, &version);
    match state.sidecar.load_model(&engine).await {
        Ok(Some(ModelState::Failed)) | Ok(None) => Err(unknown()),
        Ok(Some(_)) => Ok(engine),
        Err(e) => Err(internal(e)),
    }
}

async fn registered(state: &AppState, id: &str) -> Result<Option<Model>, GenerateError> {
    state.registry.repo.get(id).await.map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> GenerateError {
    tracing::error!(error = %e, "cannot resolve a registry model");
    GenerateError::Internal {
        message: "internal error".into(),
    }
}
