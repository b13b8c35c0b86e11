//! OpenAI's API at `/v1`, as OpenAI's SDKs expect it: its object shapes, SSE streams, and its
//! error shape `{"error": {"message", "type", "param", "code"}}`. Same keys, same engine as
//! `/api/v1`; only the edges differ.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod models;
pub mod params;
pub mod stream;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::OpenAiError;

/// Largest request body: a conversation of about a quarter of a million tokens.
pub const BODY_LIMIT: usize = 1 << 20;

/// The layers every `/v1` route gets: no panic escapes as anything but OpenAI's error shape.
pub fn layers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send + 'static>| {
        tracing::error!("handler panicked");
        OpenAiError::internal().into_response()
    }))
}

/// `/v1/...` paths no route claims answer in OpenAI's shape too.
pub async fn not_found(req: Request) -> Response {
    OpenAiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("Invalid URL ({} {})", req.method(), req.uri().path()),
    )
    .with_code("unknown_url")
    .into_response()
}

/// A unique id for a completion object.
pub fn completion_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
