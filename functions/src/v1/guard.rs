//! The front door of every v1 route: who is calling (access token or API key), whether the
//! route's permission covers them, and whether their rate limits allow the request.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use maas_store::records::identity::User;
use maas_store::records::sgt::Secret;
use maas_store::StoreError;

use super::envelope::{with_request_id, ApiError, Code};
use super::limits::{self, Class, Subject};
use super::permissions::Grants;
use super::tokens::parse_api_key;
use crate::credentials::{Checked, THROTTLED};
use crate::http::REQUEST_ID;
pub use crate::http::{client_ip, ClientIp};
use crate::state::AppState;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// SGT routes: credentials travel in the body, checked by the handler.
    Sgt,
    /// Anyone (sign-up, sign-in, health, the OpenAPI document).
    Public,
    /// A signed-in user or an API key holding this permission.
    Permission(&'static str),
}

/// How the caller proved who they are.
#[derive(Clone, Debug, PartialEq)]
pub enum Via {
    Session(String),
    ApiKey(String),
}

/// The authenticated caller, available to handlers as an extractor.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub grants: Grants,
    pub via: Via,
}

impl Principal {
    /// The API key the caller used, if it used one.
    pub fn key_id(&self) -> Option<&str> {
        match &self.via {
            Via::ApiKey(id) => Some(id),
            Via::Session(_) => None,
        }
    }

    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.grants.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("missing permission {permission}")))
        }
    }

    /// Refuses unless the caller holds every one of `permissions` itself. Whoever manages
    /// users or roles can then never hand out, take away or act on more than they hold, so
    /// `users:write` or `roles:write` cannot be turned into `*`.
    pub fn require_all<'a>(&self, permissions: impl IntoIterator<Item = &'a String>) -> Result<(), ApiError> {
        permissions.into_iter().try_for_each(|p| self.require(p))
    }

    pub fn is_admin(&self) -> bool {
        self.grants.allows("*")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Arc<Principal>>()
            .map(|p| Principal::clone(p))
            .ok_or_else(|| ApiError::internal("handler needs a principal but its route is public"))
    }
}

/// The credential a request carries, if any. An empty `X-API-Key` carries none. Two different
/// credentials are refused rather than one of them silently chosen.
fn credential(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let api_key = match headers.get("x-api-key").map(|v| v.to_str().map(str::trim)) {
        Some(Ok("")) | None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => return Err(ApiError::new(Code::Auth001, "invalid token: malformed")),
    };
    match (api_key, bearer(headers)) {
        (Some(key), Some(token)) if key != token => Err(ApiError::new(
            Code::Auth001,
            "two different credentials: send one, in Authorization or X-API-Key",
        )),
        (key, token) => Ok(key.or(token)),
    }
}

/// The token of an `Authorization: Bearer` header (the scheme is case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Authenticates the request's access token or API key.
pub async fn authenticate(state: &AppState, headers: &HeaderMap, ip: &str) -> Result<Principal, ApiError> {
    let token = credential(headers)?.ok_or_else(|| ApiError::new(Code::Auth001, "authentication required"))?;
    match parse_api_key(token) {
        Some((id, secret)) => by_api_key(state, id, secret, ip).await,
        None => by_access_token(state, token).await,
    }
}

async fn by_access_token(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let v1 = &state.v1;
    let claims = v1.tokens.verify(token)?;
    let (session, user) = tokio::try_join!(v1.repo.session(&claims.sub, &claims.sid), v1.repo.user(&claims.sub))?;
    let (Some(_), Some(user)) = (session, user) else {
        return Err(ApiError::new(Code::Auth001, "invalid token: revoked"));
    };
    let grants = v1.roles.grants(&v1.repo, &user.roles).await?;
    Ok(Principal {
        user,
        grants,
        via: Via::Session(claims.sid),
    })
}

async fn by_api_key(state: &AppState, id: &str, secret: &str, ip: &str) -> Result<Principal, ApiError> {
    let invalid = || ApiError::new(Code::Auth004, "invalid or expired API key");
    let key = match crate::credentials::verify(state, id, secret, ip).await? {
        Checked::Valid(key) => key,
        Checked::Invalid => return Err(invalid()),
        Checked::Throttled => return Err(ApiError::new(Code::TooManyRequests, THROTTLED)),
    };
    if key.user_id.is_none() {
        return Err(ApiError::new(
            Code::Auth004,
            "this key is not linked to a platform account",
        ));
    }
    key_principal(state, key).await?.ok_or_else(invalid)
}

/// Who a verified platform key acts for and what it may do now: its user's current roles,
/// narrowed to the permissions the key names. `None` when the key has no user or its user is
/// gone. SGT routes ask the same, so a demoted user's keys lose the permissions there too.
pub async fn key_principal(state: &AppState, key: Secret) -> Result<Option<Principal>, StoreError> {
    let Secret {
        secret_id,
        user_id: Some(user_id),
        permissions,
        ..
    } = key
    else {
        return Ok(None);
    };
    let Some(user) = state.v1.repo.user(&user_id).await? else {
        return Ok(None);
    };
    let all = state.v1.roles.grants(&state.v1.repo, &user.roles).await?;
    let grants = match permissions {
        Some(p) => all.within(&p),
        None => all,
    };
    Ok(Some(Principal {
        user,
        grants,
        via: Via::ApiKey(secret_id),
    }))
}

/// What one route's guard needs to know.
#[derive(Clone)]
pub struct Guarded {
    pub state: AppState,
    pub access: Access,
    pub class: Class,
    /// How a refusal is written: the v1 envelope, or OpenAI's error shape on `/v1`.
    pub render: fn(ApiError) -> Response,
}

/// Runs around every v1 handler: request id, authentication, permission, rate limits.
pub async fn guard(State(g): State<Guarded>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    with_request_id(id, admit(g, req, next)).await
}

async fn admit(g: Guarded, mut req: Request, next: Next) -> Response {
    let ip = client_ip(req.extensions());
    let principal = match g.access {
        Access::Permission(p) => match authenticate(&g.state, req.headers(), &ip).await.and_then(|pr| {
            pr.require(p)?;
            Ok(pr)
        }) {
            Ok(pr) => Some(pr),
            Err(e) => return (g.render)(e),
        },
        _ => None,
    };
    let subject = Subject {
        user_id: principal.as_ref().map(|p| p.user.user_id.as_str()),
        key_id: principal.as_ref().and_then(Principal::key_id),
        ip: &ip,
    };
    let verdict = match limits::check(&g.state.v1.repo, &g.state.v1.limits, g.class, subject).await {
        Ok(v) => v,
        Err(e) => return (g.render)(ApiError::from(e)),
    };
    let mut response = match verdict.error() {
        Some(e) => (g.render)(e),
        None => {
            if let Some(p) = principal {
                req.extensions_mut().insert(Arc::new(p));
            }
            req.extensions_mut().insert(ClientIp(ip));
            next.run(req).await
        }
    };
    verdict.write_headers(response.headers_mut());
    response
}
