//! Sign-up, sign-in (three shapes), refresh, sign-out, password change.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Extension;
use maas_store::records::identity::{CreateUserError, Session, Unique, User};
use maas_store::{Cond, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::envelope::{created, ok, parse_json, ApiBody, ApiError, ApiForm, ApiJson, ApiResult, Code};
use super::guard::{bearer, ClientIp, Principal, Via};
use super::profile::{conflict_on_race, validate_profile, UserSummary};
use super::tokens::{random_id, sha256_hex, RefreshToken};
use super::validate;
use crate::auth::{dummy_hash, hash_secret};
use crate::failures;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// 3–32 letters, digits, `_`, `.` or `-`; unique, case-insensitively.
    #[schema(pattern = "^[A-Za-z0-9_.-]{3,32}$")]
    pub username: String,
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    /// At least 10 characters with three of: lowercase, uppercase, digit, symbol; not
    /// containing the username or the email's name.
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    #[serde(default)]
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub first_name: String,
    #[serde(default)]
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub last_name: String,
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub organization: String,
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    pub user_id: String,
    pub username: String,
    pub email: String,
    /// Always false: maas sends no email.
    pub verification_sent: bool,
}

/// Creates an account with the `user` role.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = super::envelope::Envelope<Registered>), (status = 409, body = super::envelope::ErrorBody)))]
pub async fn register(State(state): State<AppState>, ApiJson(req): ApiJson<RegisterRequest>) -> ApiResult<Registered> {
    let account = NewAccount {
        username: req.username,
        email: req.email,
        password: req.password,
        first_name: req.first_name,
        last_name: req.last_name,
        organization: req.organization,
        roles: vec!["user".into()],
    };
    Ok(created(Registered::of(&create_account(&state, account).await?)))
}

impl Registered {
    pub fn of(user: &User) -> Self {
        Registered {
            user_id: user.user_id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            verification_sent: false,
        }
    }
}

/// What every way of making an account (sign-up, an admin, the configured first admin) gives.
pub struct NewAccount {
    pub username: String,
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub organization: String,
    pub roles: Vec<String>,
}

/// Validates, hashes the password and creates the user with its unique claims.
pub async fn create_account(state: &AppState, a: NewAccount) -> Result<User, ApiError> {
    validate::username(&a.username)?;
    validate::email(&a.email)?;
    validate::password(&a.password, &[&a.username, &a.email])?;
    validate_profile(&a.first_name, &a.last_name, &a.organization, "")?;
    let now = maas_store::now_secs();
    let user = User {
        user_id: random_id(),
        username: a.username,
        email: a.email,
        password_hash: Some(hash_password(a.password).await?),
        first_name: a.first_name,
        last_name: a.last_name,
        organization: a.organization,
        roles: a.roles,
        created_at: now,
        updated_at: now,
        ..User::default()
    };
    create_user(state, &user).await?;
    Ok(user)
}

pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_secret(&password))
        .await
        .map_err(ApiError::internal)
}

/// Creates a user, turning a taken username or email into 409 `RESOURCE_002`.
async fn create_user(state: &AppState, user: &User) -> Result<(), ApiError> {
    state.v1.repo.create_user(user).await.map_err(|e| match e {
        CreateUserError::UsernameTaken => ApiError::field(Code::Resource002, "username", "username is taken"),
        CreateUserError::EmailTaken => ApiError::field(Code::Resource002, "email", "email is taken"),
        CreateUserError::OAuthTaken => ApiError::new(Code::Resource002, "identity already linked"),
        CreateUserError::Store(e) => e.into(),
    })
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// A signed-in session's tokens.
#[derive(Serialize, ToSchema)]
pub struct Tokens {
    pub access_token: String,
    /// Rotates on every use; reusing an old one revokes the session.
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: UserSummary,
}

/// Signs in with email and password (seed 003).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = super::envelope::Envelope<Tokens>), (status = 401, description = "Wrong credentials", body = super::envelope::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Tokens> {
    Ok(ok(sign_in(&state, &ip.0, &req.email, &req.password).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct UsernameLogin {
    /// A username or an email.
    pub username: String,
    pub password: String,
}

/// Seed 004's sign-in answer: `token` is the access token.
#[derive(Serialize, ToSchema)]
pub struct LegacyToken {
    pub token: String,
    pub expires_in: i64,
    pub token_type: &'static str,
    pub refresh_token: String,
}

/// Signs in with username (or email) and password (seed 004).
#[utoipa::path(post, path = "/api/v1/login", tag = "auth", request_body = UsernameLogin,
    responses((status = 200, body = super::envelope::Envelope<LegacyToken>), (status = 401, description = "Wrong credentials", body = super::envelope::ErrorBody)))]
pub async fn login_legacy(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    ApiJson(req): ApiJson<UsernameLogin>,
) -> ApiResult<LegacyToken> {
    let t = sign_in(&state, &ip.0, &req.username, &req.password).await?;
    Ok(ok(LegacyToken {
        token: t.access_token,
        expires_in: t.expires_in,
        token_type: t.token_type,
        refresh_token: t.refresh_token,
    }))
}

/// OAuth2 password grant (RFC 6749 §4.3), form-encoded.
#[derive(Deserialize, ToSchema)]
pub struct PasswordGrant {
    /// `password` when given.
    #[serde(default)]
    #[schema(value_type = GrantType, required = false)]
    pub grant_type: Option<String>,
    /// A username or an email.
    pub username: String,
    pub password: String,
}

/// The only grant `/auth/token` serves.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // describes the field for the OpenAPI document only
pub enum GrantType {
    Password,
}

/// Signs in with the OAuth2 password grant (seed 002).
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth",
    request_body(content = PasswordGrant, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = super::envelope::Envelope<Tokens>), (status = 401, description = "Wrong credentials", body = super::envelope::ErrorBody)))]
pub async fn token(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    ApiForm(req): ApiForm<PasswordGrant>,
) -> ApiResult<Tokens> {
    if req.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Err(ApiError::field(
            Code::Validation003,
            "grant_type",
            "only the password grant is supported",
        ));
    }
    Ok(ok(sign_in(&state, &ip.0, &req.username, &req.password).await?))
}

/// Verifies the password (against a dummy hash when the account does not exist, so the answer
/// and its timing are the same), counting failures per account name and per address.
async fn sign_in(state: &AppState, ip: &str, identifier: &str, password: &str) -> Result<Tokens, ApiError> {
    let account = format!("acct:{}", sha256_hex(&identifier.to_lowercase()));
    let repo = &state.v1.repo;
    let address = failures::address(ip);
    let (by_account, by_address) = tokio::try_join!(failures::count(repo, &account), failures::count(repo, &address))?;
    if by_account >= failures::PER_ACCOUNT || by_address >= failures::PER_ADDRESS {
        return Err(ApiError::new(
            Code::TooManyRequests,
            "too many failed sign-ins; try again later",
        ));
    }
    let kind = if identifier.contains('@') {
        Unique::Email
    } else {
        Unique::Username
    };
    let user = if identifier.len() <= 254 {
        repo.user_by(kind, identifier).await?
    } else {
        None
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let verified = state
        .verifier
        .verify_password(password, hash.as_deref().unwrap_or(dummy_hash()))
        .await;
    match user.filter(|_| verified && hash.is_some()) {
        Some(user) => start_session(state, &user).await,
        None => {
            tokio::try_join!(failures::record(repo, &account), failures::record(repo, &address))?;
            Err(ApiError::new(Code::Auth004, "wrong email, username or password"))
        }
    }
}

/// Opens a session (a refresh-token family) and issues its first tokens.
pub async fn start_session(state: &AppState, user: &User) -> Result<Tokens, ApiError> {
    let now = maas_store::now_secs();
    let session_id = random_id();
    let refresh = RefreshToken::new(&user.user_id, &session_id);
    let session = Session {
        session_id,
        user_id: user.user_id.clone(),
        refresh_hash: sha256_hex(&refresh.secret),
        created_at: now,
        expires_at: now + state.v1.tokens.refresh_ttl,
        ver: 0,
    };
    state.v1.repo.put_session(&session, Cond::NotExists).await?;
    tokens_for(state, user, &session, &refresh)
}

fn tokens_for(state: &AppState, user: &User, session: &Session, refresh: &RefreshToken) -> Result<Tokens, ApiError> {
    Ok(Tokens {
        access_token: state.v1.tokens.issue(&user.user_id, &session.session_id)?,
        refresh_token: refresh.to_string(),
        token_type: "Bearer",
        expires_in: state.v1.tokens.access_ttl,
        user: UserSummary::of(user),
    })
}

#[derive(Deserialize, ToSchema, Default)]
pub struct RefreshRequest {
    /// Or send it as `Authorization: Bearer <refresh_token>` (seed 003).
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// Trades a refresh token for new tokens. The old refresh token stops working; presenting it
/// again revokes the whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = Option<RefreshRequest>,
    responses((status = 200, body = super::envelope::Envelope<Tokens>), (status = 401, description = "Missing, invalid, reused or expired refresh token", body = super::envelope::ErrorBody)))]
pub async fn refresh(State(state): State<AppState>, headers: HeaderMap, ApiBody(body): ApiBody) -> ApiResult<Tokens> {
    // The body is optional here (none, or `null`), so it is parsed only when there is one.
    let from_body: RefreshRequest = match body.trim_ascii() {
        b"" | b"null" => RefreshRequest::default(),
        _ => parse_json(&body)?,
    };
    let presented = from_body
        .refresh_token
        .as_deref()
        .or(bearer(&headers))
        .ok_or_else(|| ApiError::field(Code::Validation001, "refresh_token", "refresh_token is required"))?;
    let invalid = || ApiError::new(Code::Auth001, "invalid refresh token");
    let token = RefreshToken::parse(presented).ok_or_else(invalid)?;
    let repo = &state.v1.repo;
    let (session, user) = tokio::try_join!(
        repo.session(&token.user_id, &token.session_id),
        repo.user(&token.user_id)
    )?;
    let (Some(session), Some(user)) = (session, user) else {
        return Err(invalid());
    };
    let presented_hash = sha256_hex(&token.secret);
    let current: bool =
        subtle::ConstantTimeEq::ct_eq(presented_hash.as_bytes(), session.refresh_hash.as_bytes()).into();
    if !current {
        tracing::warn!(user = %user.user_id, "refresh token reused; revoking its session");
        repo.revoke_session(&user.user_id, &session.session_id).await?;
        return Err(ApiError::new(
            Code::Auth001,
            "refresh token was already used; the session is revoked",
        ));
    }
    let next = RefreshToken::new(&user.user_id, &session.session_id);
    let rotated = Session {
        refresh_hash: sha256_hex(&next.secret),
        ver: session.ver + 1,
        ..session.clone()
    };
    match repo.put_session(&rotated, Cond::Version(session.ver)).await {
        // Two refreshes raced with the same token: one of them is a replay.
        Err(StoreError::ConditionFailed) => Err(invalid()),
        other => other.map_err(ApiError::from),
    }?;
    Ok(ok(tokens_for(&state, &user, &rotated, &next)?))
}

#[derive(Serialize, ToSchema)]
pub struct Done {
    pub ok: bool,
}

/// Revokes the session the access token belongs to.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 200, body = super::envelope::Envelope<Done>)))]
pub async fn logout(State(state): State<AppState>, who: Principal) -> ApiResult<Done> {
    let Via::Session(sid) = &who.via else {
        return Err(ApiError::forbidden("sign-out needs an access token, not an API key"));
    };
    state.v1.repo.revoke_session(&who.user.user_id, sid).await?;
    Ok(ok(Done { ok: true }))
}

#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// Changes the password and revokes every session of the user.
#[utoipa::path(put, path = "/api/v1/users/me/password", tag = "users", request_body = PasswordChange,
    responses((status = 200, body = super::envelope::Envelope<Done>)))]
pub async fn change_password(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<PasswordChange>,
) -> ApiResult<Done> {
    let current = who
        .user
        .password_hash
        .clone()
        .unwrap_or_else(|| dummy_hash().to_string());
    if !state.verifier.verify_password(&req.current_password, &current).await {
        return Err(ApiError::field(
            Code::Auth004,
            "current_password",
            "current password is wrong",
        ));
    }
    validate::password(&req.new_password, &[&who.user.username, &who.user.email])?;
    let hash = hash_password(req.new_password).await?;
    let user_id = &who.user.user_id;
    // Sessions go first: should the update fail, the account is signed out everywhere rather
    // than left with live sessions. The second pass ends any signed in meanwhile.
    state.v1.repo.revoke_all_sessions(user_id).await?;
    set_password(&state, &who.user, hash).await?;
    state.v1.repo.revoke_all_sessions(user_id).await?;
    Ok(ok(Done { ok: true }))
}

/// Stores `hash` as the password of `user` (as read when the request was authenticated). A
/// change to the rest of the record meanwhile, such as a profile edit, is kept and the write
/// retried on the fresh record; another password change meanwhile wins, and this one is a 409.
async fn set_password(state: &AppState, user: &User, hash: String) -> Result<(), ApiError> {
    let mut current = user.clone();
    for _ in 0..PASSWORD_WRITE_ATTEMPTS {
        let next = User {
            password_hash: Some(hash.clone()),
            ..current
        };
        match state.v1.repo.update_user(&next).await {
            Err(StoreError::ConditionFailed) => {}
            done => return done.map(drop).map_err(ApiError::from),
        }
        current = state
            .v1
            .repo
            .user(&user.user_id)
            .await?
            // Deleted meanwhile: its sessions are gone, as after any deletion.
            .ok_or_else(|| ApiError::new(Code::Auth001, "invalid token: revoked"))?;
        if current.password_hash != user.password_hash {
            break;
        }
    }
    Err(conflict_on_race(StoreError::ConditionFailed))
}

/// Writes a password change tries before answering 409: each retry follows a concurrent
/// change to the account, which is rare.
const PASSWORD_WRITE_ATTEMPTS: usize = 3;
