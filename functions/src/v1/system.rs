//! Health of each part, and the OpenAPI document.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::envelope::{ok, Reply};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every component is.
    pub status: &'static str,
    pub components: Components,
}

#[derive(Serialize, ToSchema)]
pub struct Components {
    pub api: &'static str,
    pub store: &'static str,
    pub sidecar: &'static str,
}

fn word(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "unavailable"
    }
}

/// Reads the store and pings the sidecar; 200 with each part's state either way, so a
/// monitor sees which part is down.
#[utoipa::path(get, path = "/api/v1/system/health", tag = "system",
    responses((status = 200, body = super::envelope::Envelope<Health>)))]
pub async fn health(State(state): State<AppState>) -> Reply<Health> {
    let (store, sidecar) = tokio::join!(state.v1.repo.role("admin"), state.sidecar.health());
    let (store, sidecar) = (store.is_ok(), sidecar.is_ok());
    ok(Health {
        status: word(store && sidecar),
        components: Components {
            api: "ok",
            store: word(store),
            sidecar: word(sidecar),
        },
    })
}

/// The OpenAPI 3.1 document of every route, generated from the route table.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    (StatusCode::OK, axum::Json(super::openapi::document())).into_response()
}
