//! Sign-in through an OAuth 2.0 / OpenID Connect provider: the authorization-code exchange
//! (RFC 6749 §4.1.3), the provider's userinfo, and the maas account linked to
//! `provider:subject`. Providers are configured by their token and userinfo URLs.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use maas_store::records::identity::{CreateUserError, Unique, User};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::accounts::{start_session, Tokens};
use super::envelope::{ok, ApiError, ApiJson, ApiPath, ApiResult, Code};
use super::tokens::random_id;
use super::validate;
use crate::state::AppState;

/// A provider's answers are small JSON documents; anything bigger is refused unread.
const MAX_PROVIDER_RESPONSE: usize = 64 * 1024;
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// One provider, as configured in `MAAS_OAUTH_PROVIDERS` (a JSON array of these).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The `{provider}` in the route, e.g. `github`.
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
    /// Where codes are exchanged for tokens (form-encoded POST, JSON answer).
    pub token_url: String,
    /// Where the provider's access token buys the user's identity (`sub` or `id`, `email`).
    pub userinfo_url: String,
    /// Used when a sign-in request names none.
    #[serde(default)]
    pub redirect_uri: Option<String>,
}

/// An HTTPS client with its own rustls configuration (aws-lc-rs, the system's roots), so that
/// nothing process-wide changes for the other HTTP clients.
struct ProviderHttp(Client<HttpsConnector<HttpConnector>, Full<Bytes>>);

impl ProviderHttp {
    fn new() -> anyhow::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ProviderHttp(
            Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
        ))
    }

    /// Sends the request and reads an answer of at most `MAX_PROVIDER_RESPONSE` bytes, all
    /// within `PROVIDER_TIMEOUT`. Redirects are not followed.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let exchange = async {
            let resp = self.0.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_PROVIDER_RESPONSE)
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(PROVIDER_TIMEOUT, exchange)
            .await
            .map_err(|_| "timed out".to_string())?
    }
}

/// The configured providers and one HTTP client to reach them, built on the first OAuth
/// sign-in so that no other function's cold start loads the system's root certificates.
pub struct OAuthProviders {
    by_name: HashMap<String, ProviderConfig>,
    http: OnceLock<Result<ProviderHttp, String>>,
}

/// Provider URLs must be https; plain http is allowed only on loopback (a local test provider).
fn check_url(name: &str, what: &str, url: &str) -> anyhow::Result<()> {
    let parsed: Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("OAuth provider {name}: bad {what} {url:?}: {e}"))?;
    let loopback = matches!(parsed.host(), Some("localhost" | "127.0.0.1" | "[::1]"));
    anyhow::ensure!(
        parsed.scheme_str() == Some("https") || (parsed.scheme_str() == Some("http") && loopback),
        "OAuth provider {name}: {what} must be an https URL (http only on loopback)"
    );
    Ok(())
}

impl OAuthProviders {
    /// Parses `MAAS_OAUTH_PROVIDERS`; unset means no provider, so every OAuth sign-in is 404.
    pub fn from_json(spec: Option<&str>) -> anyhow::Result<Self> {
        let list: Vec<ProviderConfig> = match spec.map(str::trim).filter(|s| !s.is_empty()) {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| anyhow::anyhow!("MAAS_OAUTH_PROVIDERS is not a JSON array of providers: {e}"))?,
            None => Vec::new(),
        };
        let mut by_name = HashMap::new();
        for p in list {
            check_url(&p.name, "token_url", &p.token_url)?;
            check_url(&p.name, "userinfo_url", &p.userinfo_url)?;
            let name = p.name.clone();
            anyhow::ensure!(
                by_name.insert(name.clone(), p).is_none(),
                "OAuth provider {name} is configured twice"
            );
        }
        Ok(OAuthProviders {
            by_name,
            http: OnceLock::new(),
        })
    }

    fn get(&self, name: &str) -> Result<(&ProviderConfig, &ProviderHttp), ApiError> {
        let p = self
            .by_name
            .get(name)
            .ok_or_else(|| ApiError::not_found("OAuth provider"))?;
        let http = self.http.get_or_init(|| ProviderHttp::new().map_err(|e| e.to_string()));
        Ok((p, http.as_ref().map_err(|e| unavailable(name, e))?))
    }
}

#[derive(Deserialize, ToSchema)]
pub struct OAuthLogin {
    /// The authorization code the provider redirected back with.
    pub code: String,
    /// The redirect URI of the authorization request, when it is not the configured one.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// The PKCE verifier (RFC 7636), when the authorization request carried a challenge.
    #[serde(default)]
    pub code_verifier: Option<String>,
}

/// A field, when given, holds 1 to `max` bytes.
fn check_len(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > max => Err(ApiError::field(
            Code::Validation003,
            field,
            format!("{field} must be 1 to {max} bytes"),
        )),
        _ => Ok(()),
    }
}

fn check_login(req: &OAuthLogin) -> Result<(), ApiError> {
    check_len("code", Some(&req.code), 2048)?;
    check_len("redirect_uri", req.redirect_uri.as_deref(), 2048)?;
    check_len("code_verifier", req.code_verifier.as_deref(), 128)
}

/// Signs in with an authorization code from a configured provider (seed 003 §2.3). The first
/// sign-in creates an account with the `user` role; an email that already belongs to another
/// account is refused rather than linked, so a provider cannot take over a password account.
#[utoipa::path(post, path = "/api/v1/auth/oauth/{provider}", tag = "auth", request_body = OAuthLogin,
    params(("provider" = String, Path, description = "A configured provider's name")),
    responses(
        (status = 200, body = super::envelope::Envelope<Tokens>),
        (status = 401, description = "The provider refused the code", body = super::envelope::ErrorBody),
        (status = 404, description = "No such provider", body = super::envelope::ErrorBody),
        (status = 409, description = "The email belongs to another account", body = super::envelope::ErrorBody),
        (status = 503, description = "The provider did not answer properly", body = super::envelope::ErrorBody)))]
pub async fn oauth_login(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    ApiJson(req): ApiJson<OAuthLogin>,
) -> ApiResult<Tokens> {
    let (p, http) = state.v1.oauth.get(&provider)?;
    check_login(&req)?;
    let access_token = exchange_code(http, p, &req).await?;
    let identity = userinfo(http, p, &access_token).await?;
    let user = account_for(&state, &p.name, identity).await?;
    Ok(ok(start_session(&state, &user).await?))
}

fn unavailable(provider: &str, why: impl std::fmt::Display) -> ApiError {
    tracing::warn!(provider, error = %why, "OAuth provider failed");
    ApiError::new(Code::ServiceUnavailable, "the OAuth provider did not answer properly")
}

/// One request to the provider; any answer but 2xx comes back as its status.
async fn call<T: DeserializeOwned>(
    http: &ProviderHttp,
    p: &ProviderConfig,
    req: Request<Full<Bytes>>,
) -> Result<T, ApiError> {
    let (status, body) = http.send(req).await.map_err(|e| unavailable(&p.name, e))?;
    match status.as_u16() {
        200..=299 => serde_json::from_slice(&body).map_err(|e| unavailable(&p.name, e)),
        // RFC 6749 §5.2: a refused code or client is 400 (or 401); the rest is the provider's fault.
        400 | 401 => Err(ApiError::new(
            Code::Auth004,
            "the provider refused the authorization code",
        )),
        _ => Err(unavailable(&p.name, format!("answered {status}"))),
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

async fn exchange_code(http: &ProviderHttp, p: &ProviderConfig, req: &OAuthLogin) -> Result<String, ApiError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", req.code.as_str()),
        ("client_id", p.client_id.as_str()),
        ("client_secret", p.client_secret.as_str()),
    ];
    if let Some(uri) = req.redirect_uri.as_deref().or(p.redirect_uri.as_deref()) {
        form.push(("redirect_uri", uri));
    }
    if let Some(verifier) = req.code_verifier.as_deref() {
        form.push(("code_verifier", verifier));
    }
    let body = serde_urlencoded::to_string(&form).map_err(ApiError::internal)?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(&p.token_url)
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .map_err(ApiError::internal)?;
    Ok(call::<TokenAnswer>(http, p, req).await?.access_token)
}

/// What maas keeps of the provider's view of the user.
#[derive(Debug)]
struct Identity {
    subject: String,
    email: String,
    username_hint: String,
    first_name: String,
    last_name: String,
}

/// Userinfo answers differ: OpenID Connect says `sub`, GitHub says `id` (a number) and `login`.
fn identity_from(provider: &str, info: &Value) -> Result<Identity, ApiError> {
    let text = |key: &str| match info.get(key) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let subject = Some(text("sub"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text("id"));
    if subject.is_empty() || subject.len() > 255 {
        return Err(unavailable(provider, "userinfo has no usable sub or id"));
    }
    let email = text("email");
    if email.is_empty() {
        return Err(ApiError::field(
            Code::Validation001,
            "email",
            "the provider did not share an email address; allow it and sign in again",
        ));
    }
    // An address the provider has not verified could squat someone else's.
    if matches!(info.get("email_verified"), Some(Value::Bool(false))) || text("email_verified") == "false" {
        return Err(ApiError::field(
            Code::Validation003,
            "email",
            "the provider has not verified this email address",
        ));
    }
    let hint = [
        text("preferred_username"),
        text("login"),
        email.split('@').next().unwrap_or_default().into(),
    ];
    Ok(Identity {
        subject,
        email,
        username_hint: hint.into_iter().find(|h| !h.is_empty()).unwrap_or_default(),
        first_name: text("given_name"),
        last_name: text("family_name"),
    })
}

async fn userinfo(http: &ProviderHttp, p: &ProviderConfig, access_token: &str) -> Result<Identity, ApiError> {
    let req = Request::builder()
        .uri(&p.userinfo_url)
        .header(header::ACCEPT, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
        .body(Full::new(Bytes::new()))
        // A token with bytes a header cannot hold is the provider's fault.
        .map_err(|e| unavailable(&p.name, e))?;
    // A refused token here means the provider broke its own answer, not that the user erred.
    let info = call::<Value>(http, p, req).await.map_err(|e| match e.code {
        Code::Auth004 => unavailable(&p.name, "userinfo refused the provider's own token"),
        _ => e,
    })?;
    identity_from(&p.name, &info)
}

/// A valid maas username from the provider's hint: allowed characters only, 3 to 24 of them.
fn username_from(hint: &str) -> String {
    let kept: String = hint
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(24)
        .collect();
    if kept.len() < 3 {
        format!("user-{kept}")
    } else {
        kept
    }
}

/// Cleans a display name for the profile: no control characters, at most 100 of them.
fn display_name(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// The account linked to the identity, created on first sign-in.
async fn account_for(state: &AppState, provider: &str, who: Identity) -> Result<User, ApiError> {
    let link = format!("{provider}:{}", who.subject);
    if let Some(user) = state.v1.repo.user_by(Unique::OAuth, &link).await? {
        return Ok(user);
    }
    validate::email(&who.email)?;
    let base = username_from(&who.username_hint);
    let now = maas_store::now_secs();
    let mut user = User {
        user_id: random_id(),
        username: base.clone(),
        email: who.email,
        password_hash: None,
        first_name: display_name(&who.first_name),
        last_name: display_name(&who.last_name),
        roles: vec!["user".into()],
        oauth: Some(link.clone()),
        created_at: now,
        updated_at: now,
        ..User::default()
    };
    // A taken username gets a random suffix; a few tries make a clash vanishingly unlikely.
    for attempt in 0..4 {
        match state.v1.repo.create_user(&user).await {
            Ok(()) => return Ok(user),
            Err(CreateUserError::UsernameTaken) if attempt < 3 => {
                user.username = format!("{base}-{}", &random_id()[..6]);
            }
            // Either a concurrent first sign-in with this identity won the race (use its
            // account), or the email belongs to someone else.
            Err(CreateUserError::EmailTaken | CreateUserError::OAuthTaken) => {
                return state.v1.repo.user_by(Unique::OAuth, &link).await?.ok_or_else(|| {
                    ApiError::field(
                        Code::Resource002,
                        "email",
                        "an account with this email exists; sign in with its password",
                    )
                })
            }
            Err(CreateUserError::UsernameTaken) => {
                return Err(ApiError::internal("no free username for an OAuth account"))
            }
            Err(CreateUserError::Store(e)) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt always returns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identities_are_read_from_oidc_and_github_shapes() {
        let oidc = identity_from(
            "p",
            &json!({"sub": "abc", "email": "a@x.io", "preferred_username": "ann"}),
        )
        .unwrap();
        assert_eq!((oidc.subject.as_str(), oidc.username_hint.as_str()), ("abc", "ann"));
        let gh = identity_from("p", &json!({"id": 42, "login": "octo", "email": "o@x.io"})).unwrap();
        assert_eq!((gh.subject.as_str(), gh.username_hint.as_str()), ("42", "octo"));
    }

    #[test]
    fn identities_without_subject_or_verified_email_are_refused() {
        assert_eq!(
            identity_from("p", &json!({"email": "a@x.io"})).unwrap_err().code,
            Code::ServiceUnavailable
        );
        assert_eq!(
            identity_from("p", &json!({"sub": "s"})).unwrap_err().code,
            Code::Validation001
        );
        let unverified = json!({"sub": "s", "email": "a@x.io", "email_verified": false});
        assert_eq!(identity_from("p", &unverified).unwrap_err().code, Code::Validation003);
    }

    #[test]
    fn usernames_from_hints_are_valid() {
        for hint in ["Ann Lee!", "x", "", "ñandú", &"a".repeat(80)] {
            let name = username_from(hint);
            assert!(validate::username(&name).is_ok(), "{hint:?} -> {name:?}");
        }
    }

    #[test]
    fn provider_urls_must_be_https_except_on_loopback() {
        let spec = |url: &str| {
            json!([{"name": "p", "client_id": "c", "client_secret": "s", "token_url": url, "userinfo_url": url}])
                .to_string()
        };
        assert!(OAuthProviders::from_json(Some(&spec("https://idp.example/token"))).is_ok());
        assert!(OAuthProviders::from_json(Some(&spec("http://127.0.0.1:9/token"))).is_ok());
        assert!(OAuthProviders::from_json(Some(&spec("http://idp.example/token"))).is_err());
        assert!(OAuthProviders::from_json(Some("{not json")).is_err());
        assert!(OAuthProviders::from_json(None).unwrap().by_name.is_empty());
    }
}
