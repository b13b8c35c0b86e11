//! Shared HTTP machinery: the SGT error envelope, JSON bodies parsed with clear errors, and
//! the layers every router gets (request ids, tracing, body limit, panic catching).

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;

use crate::body::{BodyError, BodyLimit, BUSY};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The SGT exceptions, each with the name the SGT documentation uses.
#[derive(Debug, thiserror::Error)]
pub enum SgtError {
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    CreateModel(String),
    #[error("{0}")]
    FindModel(String),
    #[error("{0}")]
    CloneModel(String),
    #[error("{0}")]
    Run(String),
    #[error("{0}")]
    Upload(String),
    /// The body is not valid JSON or lacks / mistypes a field.
    #[error("{0}")]
    Validation(String),
    /// A platform API key's user is over a rate limit or the monthly quota.
    #[error("{0}")]
    Throttled(String),
    /// Anything unexpected. Its detail is logged, never returned.
    #[error("internal exception")]
    Internal,
}

impl SgtError {
    /// The exception name in the response, from the one table of names.
    pub fn exception(&self) -> &'static str {
        match self {
            SgtError::Auth(_) => "AuthException",
            SgtError::CreateModel(_) => "CreateWeightsNetException",
            SgtError::FindModel(_) => "FindModelException",
            SgtError::CloneModel(_) => "CloneWeightsNetToMineException",
            SgtError::Run(_) => "RunWeightsNetException",
            SgtError::Upload(_) => "UploadDataException",
            SgtError::Validation(_) => "ValidationException",
            SgtError::Throttled(_) => "ThrottlingException",
            SgtError::Internal => "InternalException",
        }
    }

    /// Logs an unexpected failure and turns it into the opaque internal exception.
    pub fn internal(e: impl std::fmt::Display) -> SgtError {
        tracing::error!(error = %e, "internal error");
        SgtError::Internal
    }
}

impl From<maas_store::StoreError> for SgtError {
    fn from(e: maas_store::StoreError) -> Self {
        SgtError::internal(e)
    }
}

#[derive(Serialize)]
struct SgtFailure<'a> {
    exception: &'a str,
    message: String,
}

/// Every SGT failure is HTTP 400 with `{"exception", "message"}`, as documented.
impl IntoResponse for SgtError {
    fn into_response(self) -> Response {
        let body = SgtFailure {
            exception: self.exception(),
            message: self.to_string(),
        };
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
}

/// The caller's address: API Gateway's source IP in Lambda, the peer address locally.
/// `X-Forwarded-For` is not trusted: anyone can write it.
pub fn client_ip(extensions: &axum::http::Extensions) -> String {
    if let Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) =
        extensions.get::<lambda_http::request::RequestContext>()
    {
        if let Some(ip) = &ctx.http.source_ip {
            return ip.clone();
        }
    }
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The caller's address, for what is counted per address (failed sign-ins and secret checks).
#[derive(Clone, Debug)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.extensions)))
    }
}

/// The raw request body, with the body limit reported as an SGT error.
pub struct SgtBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for SgtBody {
    type Rejection = SgtError;

    async fn from_request(req: Request, _: &S) -> Result<Self, SgtError> {
        crate::body::read(req).await.map(SgtBody).map_err(body_error)
    }
}

/// A body that could not be read, as an SGT error.
pub fn body_error(e: BodyError) -> SgtError {
    match e {
        BodyError::TooLarge => SgtError::Validation("request body is too large".into()),
        BodyError::Unreadable => SgtError::Validation("cannot read request body".into()),
        BodyError::Busy => SgtError::Throttled(BUSY.into()),
    }
}

/// Parses JSON, describing what is wrong in terms a client can act on. sonic-rs (SIMD) rather
/// than serde_json: SGT bodies are mostly numbers, and number parsing dominated the run path.
pub fn parse_json<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, SgtError> {
    match json_shape(bytes) {
        JsonShape::Empty => {
            return Err(SgtError::Validation(
                "request body is empty; expected a JSON object".into(),
            ))
        }
        JsonShape::NotObject => return Err(SgtError::Validation("invalid request: expected a JSON object".into())),
        JsonShape::Object => {}
    }
    if nests_too_deeply(bytes) {
        return Err(SgtError::Validation(format!(
            "invalid request: arrays and objects nest more than {MAX_NESTING} levels deep"
        )));
    }
    sonic_rs::from_slice(bytes).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "malformed JSON"
        } else {
            "invalid request"
        };
        SgtError::Validation(format!("{what}: {e}"))
    })
}

/// How deep arrays and objects may nest in an SGT body; the deepest documented one needs 4
/// (`train_data`). Kept this low for the stack: sonic-rs skips the values a request does not name
/// by recursion, and in the test profile's build each level takes 25-50 KB of a thread's 2 MB
/// (40 levels overflowed it; release builds take under 1 KB a level).
pub const MAX_NESTING: usize = 16;

/// Whether arrays and objects nest deeper than [`MAX_NESTING`] in `bytes`, brackets in strings
/// aside. sonic-rs's recursion has no limit of its own, so a body of half a megabyte of `[`
/// overflowed the stack and aborted the whole process: no text reaches it without this check.
fn nests_too_deeply(bytes: &[u8]) -> bool {
    let (mut depth, mut i) = (0usize, 0);
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => i = string_end(bytes, i + 1),
            b'[' | b'{' if depth == MAX_NESTING => return true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Where the string whose text starts at `i` ends: its closing quote, or the end of `bytes`.
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    i
}

/// What a body holds, told from its first non-blank byte, before it is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonShape {
    /// Nothing but whitespace.
    Empty,
    /// A value other than an object: an array, string, number, `true`, `false` or `null`.
    /// serde's derived structs accept an array too, field by field in order, which no client
    /// means: every body here is an object.
    NotObject,
    /// An object, or text that is not JSON at all (left to the parser to describe).
    Object,
}

pub fn json_shape(bytes: &[u8]) -> JsonShape {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => JsonShape::Empty,
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => JsonShape::NotObject,
        Some(_) => JsonShape::Object,
    }
}

/// A successful SGT answer: the raw JSON result with status 200.
pub fn ok<T: Serialize>(value: T) -> Response {
    axum::Json(value).into_response()
}

/// A 200 answer whose JSON text is already written.
pub fn json_bytes(json: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json,
    )
        .into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    SgtError::Internal.into_response()
}

/// The layers every SGT router gets. The body limit is enforced by the body extractor.
pub fn sgt_layers<S: Clone + Send + Sync + 'static>(router: Router<S>, body_limit: usize) -> Router<S> {
    router
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::Extension(BodyLimit(body_limit)))
}

/// Request ids and tracing, outermost, for every router.
pub fn common_layers(router: Router) -> Router {
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        size: u32,
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let msg = |b: &[u8]| parse_json::<Body>(b).unwrap_err().to_string();
        assert!(msg(b"").contains("empty"));
        assert!(msg(b"{\"name\":").starts_with("malformed JSON"));
        assert!(msg(b"{\"name\":\"a\"}").contains("missing field `size`"));
        assert!(msg(b"{\"name\":\"a\",\"size\":\"3\"}").contains("invalid type"));
        assert!(msg(b"{\"name\":\"a\",\"size\":-1}").contains("invalid value"));
        assert!(parse_json::<Body>(b" {\"name\":\"a\",\"size\":3} ").is_ok());
    }

    #[test]
    fn bodies_nested_past_the_limit_are_refused_before_sonic_rs_recurses_into_them() {
        let nested = |open: &str, close: &str, n: usize| {
            format!(r#"{{"name":"a","size":3,"x":{}1{}}}"#, open.repeat(n), close.repeat(n)).into_bytes()
        };
        // The body itself is the first level.
        assert!(parse_json::<Body>(&nested("[", "]", MAX_NESTING - 1)).is_ok());
        assert!(parse_json::<Body>(&nested(r#"{"a":"#, "}", MAX_NESTING - 1)).is_ok());
        for deep in [nested("[", "]", MAX_NESTING), nested(r#"{"a":"#, "}", MAX_NESTING)] {
            let message = parse_json::<Body>(&deep).unwrap_err().to_string();
            assert!(message.contains("nest more than 16 levels"), "{message}");
        }
        // Unclosed and far deeper: without the check, this aborted the test binary.
        let abyss = [b"{\"x\":".as_slice(), &[b'['; 1 << 20]].concat();
        assert!(parse_json::<Body>(&abyss)
            .unwrap_err()
            .to_string()
            .contains("nest more than"));
        // Brackets inside strings, escaped quotes included, are text.
        let quoted = format!(r#"{{"name":"\"{}","size":3}}"#, "[".repeat(1000));
        assert_eq!(parse_json::<Body>(quoted.as_bytes()).unwrap().name.len(), 1001);
    }

    #[test]
    fn every_exception_has_its_documented_name() {
        let names: Vec<_> = [
            SgtError::Auth(String::new()),
            SgtError::CreateModel(String::new()),
            SgtError::FindModel(String::new()),
            SgtError::CloneModel(String::new()),
            SgtError::Run(String::new()),
            SgtError::Upload(String::new()),
        ]
        .iter()
        .map(SgtError::exception)
        .collect();
        assert_eq!(
            names,
            [
                "AuthException",
                "CreateWeightsNetException",
                "FindModelException",
                "CloneWeightsNetToMineException",
                "RunWeightsNetException",
                "UploadDataException"
            ]
        );
        assert_eq!(SgtError::Internal.to_string(), "internal exception");
    }
}
