//! The `/api/v1` envelope (seed 003 §1.2–1.4, §11): one table from error code to HTTP status,
//! success and error bodies stamped with the time and the request id, and body extractors
//! whose failures name the offending field.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::body::BodyError;
use crate::http::{json_shape, JsonShape};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

tokio::task_local! {
    /// The current request's id, set by [`with_request_id`] around every v1 handler.
    static REQUEST_ID: String;
}

/// Runs `fut` with `id` as the request id that envelopes report.
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Epoch milliseconds as ISO-8601 UTC, to the second.
pub fn iso_millis(ms: i64) -> String {
    iso(ms.div_euclid(1000))
}

/// Epoch seconds as ISO-8601 UTC, the one time format of v1 bodies.
pub fn iso(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&format).unwrap_or_default()
}

fn timestamp() -> String {
    iso(maas_store::now_secs())
}

/// Every machine-readable error code, each with its one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub enum Code {
    /// Missing, malformed or revoked token.
    #[serde(rename = "AUTH_001")]
    Auth001,
    /// Expired token.
    #[serde(rename = "AUTH_002")]
    Auth002,
    /// Authenticated, but not allowed.
    #[serde(rename = "AUTH_003")]
    Auth003,
    /// Unknown, wrong or expired API key (or wrong credentials at login).
    #[serde(rename = "AUTH_004")]
    Auth004,
    #[serde(rename = "RESOURCE_001")]
    Resource001,
    #[serde(rename = "RESOURCE_002")]
    Resource002,
    #[serde(rename = "RESOURCE_003")]
    Resource003,
    /// Quota used up.
    #[serde(rename = "RESOURCE_004")]
    Resource004,
    /// A required field is missing.
    #[serde(rename = "VALIDATION_001")]
    Validation001,
    /// Malformed body or a field of the wrong type or format.
    #[serde(rename = "VALIDATION_002")]
    Validation002,
    /// A value out of range, too long, or refused by policy (weak password, oversized body).
    #[serde(rename = "VALIDATION_003")]
    Validation003,
    /// Unsupported media or file format.
    #[serde(rename = "VALIDATION_004")]
    Validation004,
    #[serde(rename = "TOO_MANY_REQUESTS")]
    TooManyRequests,
    #[serde(rename = "INTERNAL_ERROR")]
    Internal,
    /// A service maas depends on (an OAuth provider) did not answer properly (seed 004).
    #[serde(rename = "SERVICE_UNAVAILABLE")]
    ServiceUnavailable,
}

impl Code {
    pub fn status(self) -> StatusCode {
        match self {
            Code::Auth001 | Code::Auth002 | Code::Auth004 => StatusCode::UNAUTHORIZED,
            Code::Auth003 => StatusCode::FORBIDDEN,
            Code::Resource001 => StatusCode::NOT_FOUND,
            Code::Resource002 | Code::Resource003 => StatusCode::CONFLICT,
            Code::Resource004 | Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Validation001 | Code::Validation003 | Code::Validation004 => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Validation002 => StatusCode::BAD_REQUEST,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// One problem with one field of the input.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A failed v1 request. Internal details are logged, never returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub details: Vec<FieldError>,
    /// Overrides the code's status where a seed fixes another one (malformed JSON is 400).
    #[serde(skip)]
    pub status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
            status: None,
        }
    }

    /// An error about one named field.
    pub fn field(code: Code, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            details: vec![FieldError {
                field: field.into(),
                message: message.clone(),
            }],
            ..ApiError::new(code, message)
        }
    }

    /// The same error reported as 422 (a well-formed value that breaks a rule).
    pub fn unprocessable(mut self) -> Self {
        self.status = Some(StatusCode::UNPROCESSABLE_ENTITY);
        self
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(Code::Resource001, format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(Code::Auth003, message)
    }

    /// Logs an unexpected failure and returns the opaque internal error.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        ApiError::new(Code::Internal, "internal error")
    }
}

impl From<maas_store::StoreError> for ApiError {
    fn from(e: maas_store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

/// The error body (seed 003 §1.3).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    pub error: ApiError,
    /// ISO-8601, UTC.
    pub timestamp: String,
    pub request_id: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or(self.code.status());
        let body = ErrorBody {
            success: false,
            error: self,
            timestamp: timestamp(),
            request_id: request_id(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        // A busy model or a full queue clears in moments; the rate limiter replaces this with
        // its own window's reset.
        if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// The success body (seed 003 §1.2).
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
    pub message: String,
    /// The HTTP status, repeated.
    pub code: u16,
    pub timestamp: String,
    pub request_id: String,
}

/// A successful v1 answer: status, message and data, enveloped when turned into a response.
pub struct Reply<T> {
    pub status: StatusCode,
    pub message: &'static str,
    pub data: T,
}

pub fn ok<T: Serialize>(data: T) -> Reply<T> {
    Reply {
        status: StatusCode::OK,
        message: "OK",
        data,
    }
}

pub fn created<T: Serialize>(data: T) -> Reply<T> {
    Reply {
        status: StatusCode::CREATED,
        message: "Created",
        data,
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let body = Envelope {
            success: true,
            data: self.data,
            message: self.message.to_string(),
            code: self.status.as_u16(),
            timestamp: timestamp(),
            request_id: request_id(),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<Reply<T>, ApiError>;

/// The raw body (for handlers whose body is optional), with [`ApiJson`]'s size errors.
pub struct ApiBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        body_bytes(req).await.map(ApiBody)
    }
}

/// The raw body, with the body limit reported in the envelope.
async fn body_bytes(req: Request) -> Result<Bytes, ApiError> {
    crate::body::read(req).await.map_err(|e| {
        let mut e = match e {
            BodyError::TooLarge => ApiError::new(Code::Validation003, "request body is too large"),
            BodyError::Unreadable => ApiError::new(Code::Validation002, "cannot read the request body"),
            BodyError::Busy => return ApiError::new(Code::ServiceUnavailable, crate::body::BUSY),
        };
        e.status = Some(StatusCode::BAD_REQUEST);
        e
    })
}

/// Turns a deserialisation failure into an error that names the field.
fn describe(path: String, message: String, syntax: bool) -> ApiError {
    if syntax {
        return ApiError::new(Code::Validation002, format!("malformed body: {message}"));
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        let field = if path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return ApiError::field(Code::Validation001, &field, format!("{field} is required"));
    }
    let field = if path == "." { "body".to_string() } else { path };
    let mut e = ApiError::field(Code::Validation002, &field, message);
    e.status = Some(StatusCode::UNPROCESSABLE_ENTITY);
    e
}

/// A JSON body. Malformed JSON is 400 `VALIDATION_002`; a missing field 422 `VALIDATION_001`;
/// a mistyped one 422 `VALIDATION_002`; each names the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        parse_json(&body_bytes(req).await?).map(ApiJson)
    }
}

/// One JSON body read as two types, each with [`ApiJson`]'s errors: for requests whose fields
/// are partly shared with another route's (`#[serde(flatten)]` would lose a mistyped field's
/// name).
pub struct ApiJsonPair<T, U>(pub T, pub U);

impl<T: DeserializeOwned, U: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJsonPair<T, U> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req).await?;
        Ok(ApiJsonPair(parse_json(&bytes)?, parse_json(&bytes)?))
    }
}

/// Parses a JSON body with [`ApiJson`]'s errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match json_shape(bytes) {
        JsonShape::Empty => {
            return Err(ApiError::new(
                Code::Validation002,
                "request body is empty; expected a JSON object",
            ))
        }
        JsonShape::NotObject => {
            let message = "invalid type: expected a JSON object".into();
            return Err(describe(".".into(), message, false));
        }
        JsonShape::Object => {}
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let syntax = e.inner().is_syntax() || e.inner().is_eof();
        let message = e.inner().to_string();
        let message = message.split(" at line ").next().unwrap_or_default().to_string();
        describe(e.path().to_string(), message, syntax)
    })
}

/// Parses a form body or a query string with [`ApiJson`]'s errors.
fn parse_urlencoded<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(de).map_err(|e| describe(e.path().to_string(), e.inner().to_string(), false))
}

/// A form-encoded body (the OAuth2 token endpoint), with the same errors as [`ApiJson`].
pub struct ApiForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        parse_urlencoded(&body_bytes(req).await?).map(ApiForm)
    }
}

/// A query string, with the same errors as [`ApiJson`].
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        parse_urlencoded(parts.uri.query().unwrap_or_default().as_bytes()).map(ApiQuery)
    }
}

/// A path parameter. One that is not UTF-8 once decoded (`%FF`) is answered in the envelope,
/// not with axum's plain-text 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(e) if e.status().is_server_error() => Err(ApiError::internal(e.body_text())),
            Err(e) => Err(ApiError::new(Code::Validation002, e.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status_from_section_1_4() {
        let allowed = [400, 401, 403, 404, 409, 422, 429, 500];
        for code in [
            Code::Auth001,
            Code::Auth002,
            Code::Auth003,
            Code::Auth004,
            Code::Resource001,
            Code::Resource002,
            Code::Resource003,
            Code::Resource004,
            Code::Validation001,
            Code::Validation002,
            Code::Validation003,
            Code::Validation004,
            Code::TooManyRequests,
            Code::Internal,
        ] {
            assert!(allowed.contains(&code.status().as_u16()), "{code:?}");
        }
        assert_eq!(serde_json::to_value(Code::Auth001).unwrap(), "AUTH_001");
    }

    #[test]
    fn waits_are_told_when_to_retry_and_other_errors_are_not() {
        let retry = |code: Code| {
            ApiError::new(code, "x")
                .into_response()
                .headers()
                .contains_key(axum::http::header::RETRY_AFTER)
        };
        assert!(retry(Code::TooManyRequests) && retry(Code::ServiceUnavailable));
        assert!(!retry(Code::Resource001) && !retry(Code::Internal));
    }

    #[test]
    fn a_missing_field_is_named_in_the_details() {
        let e = describe(".".into(), "missing field `email`".into(), false);
        assert_eq!((e.code, e.details[0].field.as_str()), (Code::Validation001, "email"));
        let e = describe("age".into(), "invalid type: string \"x\", expected u32".into(), false);
        assert_eq!((e.code, e.details[0].field.as_str()), (Code::Validation002, "age"));
    }
}
