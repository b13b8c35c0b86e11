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

pub use observe::{Call, Outcome};

pub struct InferenceState {
    pub repo: InferenceRepo,
    /// Days a call stays in its caller's history.
    pub history_days: u32,
    pub counters: counters::ModelCounters,
}

/// `GET /metrics`: this process's counters in Prometheus' text format, for whoever holds the
/// system key (`Authorization: Bearer <key>`, compared in constant time).
pub async fn metrics_endpoint(State(state): State<crate::state::AppState>, headers: HeaderMap) -> Response {
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
