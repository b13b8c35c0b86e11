//! OpenAI's error shape, one table from status to `type`, and the translations from the
//! platform's own errors (authentication, rate limits) and the engine's refusals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maas_sidecar_client::llm::GenerateError;
use serde::Serialize;

use crate::v1::envelope::ApiError;

#[derive(Debug, Clone, Serialize)]
pub struct OpenAiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a OpenAiError,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        OpenAiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_param(param)
    }

    pub fn model_not_found(model: &str) -> Self {
        OpenAiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    pub fn internal() -> Self {
        OpenAiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request.",
        )
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The error as one SSE event, for failures after a stream has started.
    pub fn sse_data(&self) -> String {
        serde_json::to_string(&Body { error: self }).unwrap_or_default()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Body { error: &self })).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// The platform's errors (the guard's authentication and rate limits) in OpenAI's shape.
impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let status = e.status.unwrap_or(e.code.status());
        let (kind, code) = match status {
            StatusCode::UNAUTHORIZED => ("invalid_request_error", Some("invalid_api_key")),
            StatusCode::FORBIDDEN => ("permission_error", None),
            StatusCode::NOT_FOUND => ("invalid_request_error", None),
            StatusCode::TOO_MANY_REQUESTS => ("requests", Some("rate_limit_exceeded")),
            s if s.is_server_error() => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        OpenAiError {
            status,
            message: e.message,
            kind,
            param: e.details.first().map(|d| d.field.clone()),
            code: code.map(str::to_string),
        }
    }
}

/// The engine's refusals before a generation starts.
impl From<GenerateError> for OpenAiError {
    fn from(e: GenerateError) -> Self {
        match &e {
            GenerateError::UnknownModel { model } => OpenAiError::model_not_found(model),
            GenerateError::Loading => OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The model is loading; retry shortly.",
            )
            .with_code("model_loading"),
            GenerateError::QueueFull => OpenAiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "The model is busy: too many requests are waiting. Retry shortly.",
            )
            .with_code("rate_limit_exceeded"),
            GenerateError::ContextTooLong { .. } => {
                OpenAiError::invalid("messages", e.to_string()).with_code("context_length_exceeded")
            }
            GenerateError::BadPrompt { message } => OpenAiError::invalid("messages", message.clone()),
            GenerateError::Internal { message } => {
                tracing::error!(error = %message, "generation failed to start");
                OpenAiError::internal()
            }
        }
    }
}

/// Renders the guard's refusals for a `/v1` route.
pub fn render_api_error(e: ApiError) -> Response {
    OpenAiError::from(e).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_refusal_has_its_status_and_code_and_waits_are_told_when_to_retry() {
        let cases = [
            (
                GenerateError::UnknownModel { model: "m".into() },
                StatusCode::NOT_FOUND,
                Some("model_not_found"),
            ),
            (
                GenerateError::Loading,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("model_loading"),
            ),
            (
                GenerateError::QueueFull,
                StatusCode::TOO_MANY_REQUESTS,
                Some("rate_limit_exceeded"),
            ),
            (
                GenerateError::ContextTooLong {
                    context: 8192,
                    prompt: 9000,
                    max_tokens: 16,
                    needed: 9016,
                },
                StatusCode::BAD_REQUEST,
                Some("context_length_exceeded"),
            ),
            (
                GenerateError::BadPrompt {
                    message: "no template".into(),
                },
                StatusCode::BAD_REQUEST,
                None,
            ),
            (
                GenerateError::Internal {
                    message: "secret detail".into(),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
            ),
        ];
        for (e, status, code) in cases {
            let err = OpenAiError::from(e.clone());
            assert_eq!((err.status, err.code.as_deref()), (status, code), "{e:?}");
            assert!(
                !err.message.contains("secret detail"),
                "internal details stay in the log"
            );
            let retry = err
                .into_response()
                .headers()
                .contains_key(axum::http::header::RETRY_AFTER);
            assert_eq!(
                retry,
                matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE),
                "{e:?}"
            );
        }
    }
}
