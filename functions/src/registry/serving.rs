//! Registry models on the engine: a version is served as `{id}@{version}` from its folder in the
//! bucket. A caller names it so, or by the model's id alone (its latest version); either way the
//! caller must be allowed to see the model, and the engine is asked to load it.

use maas_sidecar_client::llm::{GenerateError, ModelState};
use maas_store::StoreError;

use crate::state::AppState;

/// Why a registry model cannot be served to a caller.
pub enum Unservable {
    /// No such model, or not one the caller may see.
    Missing,
    /// The model has no ready version by that name (or none at all).
    NoVersion,
    /// The engine cannot find or load it.
    Engine,
    Store(StoreError),
}

/// A ready version of registry model `id` that `owner` may see, at `version` or the model's
/// latest, loading on the engine: `(engine id, version)`.
pub async fn ready_version(
    state: &AppState,
    owner: &str,
    id: &str,
    version: Option<String>,
) -> Result<(String, String), Unservable> {
    let model = state.registry.repo.get(id).await.map_err(Unservable::Store)?;
    let model = model.filter(|m| m.visible_to(owner)).ok_or(Unservable::Missing)?;
    let version = version.or(model.latest_version).ok_or(Unservable::NoVersion)?;
    let stored = state
        .registry
        .repo
        .version(id, &version)
        .await
        .map_err(Unservable::Store)?;
    if stored.is_none_or(|v| v.status != "ready") {
        return Err(Unservable::NoVersion);
    }
    let engine = super::engine_id(id, &version);
    match state.sidecar.load_model(&engine).await {
        Ok(Some(ModelState::Failed)) | Ok(None) => Err(Unservable::Engine),
        Ok(Some(_)) => Ok((engine, version)),
        Err(e) => Err(Unservable::Store(StoreError::backend(e))),
    }
}

/// Whether `id` can name a registry model (their ids are UUIDs; built-ins' are names).
pub fn is_registry_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

/// The engine id that `name` runs as for `owner`. Names that are not registry models (the
/// built-ins) pass unchanged; the engine knows them or answers that it does not.
pub async fn engine_model(state: &AppState, owner: &str, name: &str) -> Result<String, GenerateError> {
    let (id, version) = match name.rsplit_once('@') {
        Some((id, v)) => (id, Some(v.to_string())),
        None => (name, None),
    };
    if !is_registry_id(id) {
        return Ok(name.to_string());
    }
    match ready_version(state, owner, id, version).await {
        Ok((engine, _)) => Ok(engine),
        Err(Unservable::Store(e)) => {
            tracing::error!(error = %e, "cannot resolve a registry model");
            Err(GenerateError::Internal {
                message: "internal error".into(),
            })
        }
        Err(_) => Err(GenerateError::UnknownModel {
            model: name.to_string(),
        }),
    }
}
