//! Roles (named permission sets) and permission checks.

use axum::extract::State;
use maas_store::records::identity::Role;
use maas_store::{Cond, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::accounts::Done;
use super::envelope::{created, iso, ok, ApiError, ApiJson, ApiPath, ApiResult, Code};
use super::guard::Principal;
use super::permissions::{builtin, is_known, Permission, RoleName, BUILTIN_ROLES};
use super::profile::conflict_on_race;
use super::validate;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct RoleBody {
    /// 2–32 lowercase letters, digits, `_` or `-`.
    #[schema(value_type = RoleName)]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 500, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: String,
    #[schema(value_type = Vec<Permission>, max_items = 64)]
    pub permissions: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RoleUpdate {
    #[schema(max_length = 500, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<String>,
    #[schema(value_type = Option<Vec<Permission>>, max_items = 64)]
    pub permissions: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct RoleView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

fn view(r: &Role) -> RoleView {
    RoleView {
        id: r.name.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        permissions: r.permissions.clone(),
        created_at: iso(r.created_at),
        updated_at: iso(r.updated_at),
    }
}

fn check_permissions(perms: &[String]) -> Result<(), ApiError> {
    if perms.len() > 64 {
        return Err(ApiError::field(
            Code::Validation003,
            "permissions",
            "at most 64 permissions",
        ));
    }
    match perms.iter().find(|p| !is_known(p)) {
        Some(p) => Err(ApiError::field(
            Code::Validation003,
            "permissions",
            format!("unknown permission {p:?}"),
        )),
        None => Ok(()),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (2..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            Code::Validation002,
            "name",
            "name must be 2 to 32 of a-z, 0-9, '_', '-'",
        )
        .unprocessable())
    }
}

async fn find(state: &AppState, id: &str) -> Result<Role, ApiError> {
    state.v1.repo.role(id).await?.ok_or_else(|| ApiError::not_found("role"))
}

/// Every stored role.
#[utoipa::path(get, path = "/api/v1/permissions/roles", tag = "permissions",
    responses((status = 200, body = super::envelope::Envelope<Vec<RoleView>>)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Vec<RoleView>> {
    Ok(ok(state.v1.repo.roles().await?.iter().map(view).collect()))
}

#[utoipa::path(post, path = "/api/v1/permissions/roles", tag = "permissions", request_body = RoleBody,
    responses((status = 201, body = super::envelope::Envelope<RoleView>), (status = 409, body = super::envelope::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<RoleBody>,
) -> ApiResult<RoleView> {
    check_name(&req.name)?;
    validate::text("description", &req.description, 500)?;
    check_permissions(&req.permissions)?;
    who.require_all(&req.permissions)?;
    let now = maas_store::now_secs();
    let role = Role {
        name: req.name,
        description: req.description,
        permissions: req.permissions,
        created_at: now,
        updated_at: now,
        ver: 0,
    };
    match state.v1.repo.put_role(&role, Cond::NotExists).await {
        Err(StoreError::ConditionFailed) => Err(ApiError::field(Code::Resource002, "name", "role exists")),
        other => other.map_err(ApiError::from),
    }?;
    state.v1.roles.clear();
    Ok(created(view(&role)))
}

#[utoipa::path(get, path = "/api/v1/permissions/roles/{id}", tag = "permissions", params(("id" = String, Path)),
    responses((status = 200, body = super::envelope::Envelope<RoleView>), (status = 404, body = super::envelope::ErrorBody)))]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<RoleView> {
    Ok(ok(view(&find(&state, &id).await?)))
}

#[utoipa::path(put, path = "/api/v1/permissions/roles/{id}", tag = "permissions", params(("id" = String, Path)),
    request_body = RoleUpdate,
    responses((status = 200, body = super::envelope::Envelope<RoleView>), (status = 404, body = super::envelope::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RoleUpdate>,
) -> ApiResult<RoleView> {
    let role = find(&state, &id).await?;
    who.require_all(&role.permissions)?;
    let next = Role {
        description: req.description.unwrap_or_else(|| role.description.clone()),
        permissions: req.permissions.unwrap_or_else(|| role.permissions.clone()),
        updated_at: maas_store::now_secs(),
        ver: role.ver + 1,
        ..role.clone()
    };
    validate::text("description", &next.description, 500)?;
    check_permissions(&next.permissions)?;
    who.require_all(&next.permissions)?;
    state
        .v1
        .repo
        .put_role(&next, Cond::Version(role.ver))
        .await
        .map_err(conflict_on_race)?;
    state.v1.roles.clear();
    Ok(ok(view(&next)))
}

#[utoipa::path(delete, path = "/api/v1/permissions/roles/{id}", tag = "permissions", params(("id" = String, Path)),
    responses((status = 200, body = super::envelope::Envelope<Done>), (status = 404, body = super::envelope::ErrorBody)))]
pub async fn delete(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<Done> {
    who.require_all(&find(&state, &id).await?.permissions)?;
    match state.v1.repo.delete_role(&id).await {
        Err(StoreError::ConditionFailed) => Err(ApiError::not_found("role")),
        other => other.map_err(ApiError::from),
    }?;
    state.v1.roles.clear();
    Ok(ok(Done { ok: true }))
}

/// Stores the built-in roles (admin, user, viewer) where they are missing; idempotent.
#[utoipa::path(post, path = "/api/v1/permissions/roles/init", tag = "permissions",
    responses((status = 200, body = super::envelope::Envelope<Vec<RoleView>>)))]
pub async fn init(State(state): State<AppState>) -> ApiResult<Vec<RoleView>> {
    let now = maas_store::now_secs();
    for name in BUILTIN_ROLES {
        let role = Role {
            name: name.to_string(),
            description: format!("built-in {name} role"),
            permissions: builtin(name).unwrap_or_default(),
            created_at: now,
            updated_at: now,
            ver: 0,
        };
        match state.v1.repo.put_role(&role, Cond::NotExists).await {
            Err(StoreError::ConditionFailed) => {}
            other => other?,
        }
    }
    state.v1.roles.clear();
    Ok(ok(state.v1.repo.roles().await?.iter().map(view).collect()))
}

#[derive(Deserialize, ToSchema)]
pub struct CheckRequest {
    #[schema(value_type = Permission)]
    pub permission: String,
    /// Whose permissions to check; the caller's when absent (others' need `users:read`).
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CheckResult {
    pub user_id: String,
    pub permission: String,
    pub allowed: bool,
}

/// Says whether a user holds a permission.
#[utoipa::path(post, path = "/api/v1/permissions/check", tag = "permissions", request_body = CheckRequest,
    responses((status = 200, body = super::envelope::Envelope<CheckResult>), (status = 404, body = super::envelope::ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<CheckRequest>,
) -> ApiResult<CheckResult> {
    if !is_known(&req.permission) {
        return Err(ApiError::field(Code::Validation003, "permission", "unknown permission"));
    }
    let allowed = match req.user_id.as_deref() {
        None => who.grants.allows(&req.permission),
        Some(id) if id == who.user.user_id => who.grants.allows(&req.permission),
        Some(id) => {
            who.require("users:read")?;
            let user = state
                .v1
                .repo
                .user(id)
                .await?
                .ok_or_else(|| ApiError::not_found("user"))?;
            state
                .v1
                .roles
                .grants(&state.v1.repo, &user.roles)
                .await?
                .allows(&req.permission)
        }
    };
    Ok(ok(CheckResult {
        user_id: req.user_id.unwrap_or(who.user.user_id),
        permission: req.permission,
        allowed,
    }))
}
