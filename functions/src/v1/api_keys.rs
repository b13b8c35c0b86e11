//! The caller's API keys: created with a name, permissions and an optional expiry; the secret
//! is shown once and stored hashed.

use axum::extract::State;
use maas_store::records::sgt::Secret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::accounts::Done;
use super::envelope::{created, iso, ok, ApiError, ApiJson, ApiPath, ApiResult, Code};
use super::guard::Principal;
use super::permissions::{is_known, Permission};
use super::tokens::{random_id, random_secret};
use super::validate;
use crate::auth::hash_key;
use crate::state::AppState;

/// How far ahead a key's expiry may be: keys without one expire after this too.
const MAX_KEY_LIFETIME: i64 = 5 * 365 * 86400;
const MAX_KEYS_PER_USER: usize = 100;

#[derive(Deserialize, ToSchema)]
pub struct NewApiKey {
    #[schema(
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// `resource:action` strings, e.g. `model:read`, `inference:create`; each must be one the
    /// caller holds.
    #[schema(value_type = Vec<Permission>, min_items = 1, max_items = 32)]
    pub permissions: Vec<String>,
    /// ISO-8601 with a time zone; within the next 5 years.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub permissions: Vec<String>,
    pub expires_at: String,
    pub created_at: String,
    /// The key's public prefix, `mk_{id}`, to recognise it by.
    pub prefix: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The whole key, `mk_{id}.{secret}`. Shown only now. Works as `Authorization: Bearer`,
    /// as `X-API-Key`, and in the SGT API as `secret_id` = id, `secret_key` = secret.
    pub key: String,
}

fn info(s: &Secret) -> ApiKeyInfo {
    ApiKeyInfo {
        id: s.secret_id.clone(),
        name: s.doc.clone(),
        permissions: s.permissions.clone().unwrap_or_default(),
        expires_at: iso(s.end_time),
        created_at: iso(s.created_at),
        prefix: format!("mk_{}", s.secret_id),
    }
}

fn expiry(expires_at: Option<&str>, now: i64) -> Result<i64, ApiError> {
    let Some(text) = expires_at else {
        return Ok(now + MAX_KEY_LIFETIME);
    };
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::field(
                Code::Validation002,
                "expires_at",
                "expires_at must be ISO-8601 with a time zone",
            )
            .unprocessable()
        })?
        .unix_timestamp();
    if t <= now || t > now + MAX_KEY_LIFETIME {
        return Err(ApiError::field(
            Code::Validation003,
            "expires_at",
            "expires_at must be in the next 5 years",
        ));
    }
    Ok(t)
}

/// Creates an API key. The answer is the only time the secret is shown.
#[utoipa::path(post, path = "/api/v1/users/me/api-keys", tag = "api-keys", request_body = NewApiKey,
    responses((status = 201, body = super::envelope::Envelope<CreatedApiKey>, links(
        ("DeleteApiKey" = (operation_id = "v1-api-keys-delete", parameters(("key_id" = "$response.body#/data/id"))))
    ))))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<NewApiKey>,
) -> ApiResult<CreatedApiKey> {
    if req.name.trim().is_empty() {
        return Err(ApiError::field(Code::Validation001, "name", "name is required"));
    }
    validate::text("name", &req.name, 100)?;
    if req.permissions.is_empty() || req.permissions.len() > 32 {
        return Err(ApiError::field(
            Code::Validation003,
            "permissions",
            "give 1 to 32 permissions",
        ));
    }
    for p in &req.permissions {
        if !is_known(p) {
            return Err(ApiError::field(
                Code::Validation003,
                "permissions",
                format!("unknown permission {p:?}"),
            ));
        }
        who.require(p)?;
    }
    let now = maas_store::now_secs();
    let end_time = expiry(req.expires_at.as_deref(), now)?;
    if state.v1.repo.api_keys(&who.user.user_id).await?.len() >= MAX_KEYS_PER_USER {
        return Err(ApiError::new(
            Code::Resource004,
            format!("at most {MAX_KEYS_PER_USER} keys per user"),
        ));
    }
    let (id, secret) = (random_id(), random_secret());
    let key = Secret {
        secret_id: id.clone(),
        hash: hash_key(&secret),
        doc: req.name,
        end_time,
        updated_at: now,
        user_id: Some(who.user.user_id.clone()),
        permissions: Some(req.permissions),
        created_at: now,
        ver: 0,
    };
    state.v1.repo.create_api_key(&key).await?;
    Ok(created(CreatedApiKey {
        info: info(&key),
        key: format!("mk_{id}.{secret}"),
    }))
}

/// The caller's keys, without their secrets.
#[utoipa::path(get, path = "/api/v1/users/me/api-keys", tag = "api-keys",
    responses((status = 200, body = super::envelope::Envelope<Vec<ApiKeyInfo>>)))]
pub async fn list(State(state): State<AppState>, who: Principal) -> ApiResult<Vec<ApiKeyInfo>> {
    let keys = state.v1.repo.api_keys(&who.user.user_id).await?;
    Ok(ok(keys.iter().map(info).collect()))
}

/// Deletes one of the caller's keys; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/users/me/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path)),
    responses((status = 200, body = super::envelope::Envelope<Done>), (status = 404, body = super::envelope::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<Done> {
    let key = state.v1.repo.api_key(&key_id).await?;
    let Some(key) = key.filter(|k| k.user_id.as_deref() == Some(who.user.user_id.as_str())) else {
        return Err(ApiError::not_found("API key"));
    };
    state.v1.repo.delete_api_key(&key).await?;
    Ok(ok(Done { ok: true }))
}
