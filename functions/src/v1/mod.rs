//! The platform API under `/api/v1`: identity and access (accounts, tokens, API keys, roles,
//! rate limits) and inference (deployments, calls, history) on seed 003's envelope, described
//! by a generated OpenAPI document.

pub mod accounts;
pub mod api_keys;
pub mod dataset_quality;
pub mod dataset_versions;
pub mod datasets;
pub mod deployments;
pub mod envelope;
pub mod guard;
pub mod inference;
pub mod inference_ws;
pub mod limits;
pub mod models;
pub mod oauth;
pub mod openapi;
pub mod params;
pub mod permissions;
pub mod profile;
pub mod projects;
pub mod roles;
pub mod system;
pub mod tasks;
pub mod tokens;
pub mod users;
pub mod validate;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use maas_store::records::identity::IdentityRepo;
use tower_http::catch_panic::CatchPanicLayer;

use envelope::{with_request_id, ApiError, Code};
use limits::RateLimits;
use permissions::RoleCache;
use tokens::TokenKeys;

/// v1 bodies are small JSON documents; large uploads go to S3 through presigned URLs.
pub const V1_BODY_LIMIT: usize = 1 << 20;

/// What the v1 handlers share, built once per process.
pub struct V1State {
    pub repo: IdentityRepo,
    pub tokens: TokenKeys,
    pub roles: RoleCache,
    pub limits: RateLimits,
    pub oauth: oauth::OAuthProviders,
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("handler panicked").into_response()
}

pub fn v1_layers<S: Clone + Send + Sync + 'static>(router: Router<S>, body_limit: usize) -> Router<S> {
    router
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::Extension(crate::body::BodyLimit(body_limit)))
}

/// Unknown paths answer 404 in the envelope.
pub async fn not_found(req: Request) -> Response {
    let id = req
        .headers()
        .get(crate::http::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    with_request_id(id, async {
        ApiError::new(Code::Resource001, "no such route").into_response()
    })
    .await
}
