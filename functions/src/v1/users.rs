//! Users, for admins: list (paginated), create, read, change, delete.

use axum::extract::State;
use maas_store::records::identity::User;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::accounts::{create_account, Done, NewAccount, Registered};
use super::envelope::{created, ok, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::permissions::RoleName;
use super::profile::{conflict_on_race, profile_of, Profile, ProfileUpdate};
use crate::state::AppState;

/// The last page a listing serves; the document states it, so no client meets an unstated limit.
const MAX_PAGE: u32 = 1_000_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1-based page, at most 1,000,000; 1 by default.
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    /// Page size, 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only users whose username or email contains this.
    pub search: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Pagination {
    pub page: u32,
    pub limit: u32,
    pub total: usize,
    pub pages: usize,
}

impl Pagination {
    pub fn new(page: u32, limit: u32, total: usize) -> Pagination {
        Pagination {
            page,
            limit,
            total,
            pages: total.div_ceil(limit as usize),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<Profile>,
    pub pagination: Pagination,
}

async fn find(state: &AppState, id: &str) -> Result<User, ApiError> {
    state.v1.repo.user(id).await?.ok_or_else(|| ApiError::not_found("user"))
}

async fn view(state: &AppState, user: &User) -> Result<Profile, ApiError> {
    let grants = state.v1.roles.grants(&state.v1.repo, &user.roles).await?;
    profile_of(state, user, grants.to_vec()).await
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(ListQuery),
    responses((status = 200, body = super::envelope::Envelope<UserPage>)))]
pub async fn list(State(state): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<UserPage> {
    let (page, limit) = super::params::page(q.page, q.limit, MAX_PAGE)?;
    let needle = q.search.unwrap_or_default().to_lowercase();
    let users: Vec<User> = state
        .v1
        .repo
        .users()
        .await?
        .into_iter()
        .filter(|u| {
            needle.is_empty() || u.username.to_lowercase().contains(&needle) || u.email.to_lowercase().contains(&needle)
        })
        .collect();
    let total = users.len();
    let shown = users
        .iter()
        .skip((page as usize - 1) * limit as usize)
        .take(limit as usize);
    // One quota read per listed user; concurrent, so a page costs about one round trip.
    let items = futures::future::try_join_all(shown.map(|u| view(&state, u))).await?;
    Ok(ok(UserPage {
        items,
        pagination: Pagination::new(page, limit, total),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct NewUser {
    #[schema(pattern = "^[A-Za-z0-9_.-]{3,32}$")]
    pub username: String,
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    /// `["user"]` by default; each must name an existing role.
    #[serde(default)]
    #[schema(value_type = Option<Vec<RoleName>>)]
    pub roles: Option<Vec<String>>,
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

/// Refuses unless the caller holds every permission that `roles` grant.
async fn within_reach(state: &AppState, who: &Principal, roles: &[String]) -> Result<(), ApiError> {
    let grants = state.v1.roles.grants(&state.v1.repo, roles).await?;
    who.require_all(&grants.0)
}

async fn check_roles(state: &AppState, roles: &[String]) -> Result<(), ApiError> {
    for r in roles {
        if state.v1.repo.role(r).await?.is_none() && super::permissions::builtin(r).is_none() {
            return Err(ApiError::field(
                Code::Validation003,
                "roles",
                format!("no role named {r:?}"),
            ));
        }
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses(
        (status = 201, body = super::envelope::Envelope<Registered>, links(
            ("GetUser" = (operation_id = "v1-users-get", parameters(("id" = "$response.body#/data/user_id")))),
            ("UpdateUser" = (operation_id = "v1-users-update", parameters(("id" = "$response.body#/data/user_id")))),
            ("DeleteUser" = (operation_id = "v1-users-delete", parameters(("id" = "$response.body#/data/user_id"))))
        )),
        (status = 409, body = super::envelope::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<NewUser>,
) -> ApiResult<Registered> {
    let roles = req.roles.unwrap_or_else(|| vec!["user".into()]);
    check_roles(&state, &roles).await?;
    within_reach(&state, &who, &roles).await?;
    let account = NewAccount {
        username: req.username,
        email: req.email,
        password: req.password,
        first_name: req.first_name,
        last_name: req.last_name,
        organization: req.organization,
        roles,
    };
    Ok(created(Registered::of(&create_account(&state, account).await?)))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 200, body = super::envelope::Envelope<Profile>), (status = 404, body = super::envelope::ErrorBody)))]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Profile> {
    let user = find(&state, &id).await?;
    Ok(ok(view(&state, &user).await?))
}

/// The profile fields of [`ProfileUpdate`] plus roles. Spelled out rather than
/// `#[serde(flatten)]`ed: flattening hides a mistyped field's name from the error.
#[derive(Deserialize, ToSchema)]
pub struct UserUpdate {
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub first_name: Option<String>,
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub last_name: Option<String>,
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub organization: Option<String>,
    /// An https URL, or empty to clear it.
    #[schema(max_length = 2048, pattern = "^(https://[^\\u0000-\\u0020\\u007F-\\u009F]*)?$")]
    pub avatar_url: Option<String>,
    #[schema(value_type = Option<Vec<RoleName>>)]
    pub roles: Option<Vec<String>>,
}

impl UserUpdate {
    fn split(self) -> (ProfileUpdate, Option<Vec<String>>) {
        let profile = ProfileUpdate {
            first_name: self.first_name,
            last_name: self.last_name,
            organization: self.organization,
            avatar_url: self.avatar_url,
        };
        (profile, self.roles)
    }
}

#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path)), request_body = UserUpdate,
    responses((status = 200, body = super::envelope::Envelope<Profile>), (status = 404, body = super::envelope::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UserUpdate>,
) -> ApiResult<Profile> {
    let user = find(&state, &id).await?;
    within_reach(&state, &who, &user.roles).await?;
    let (profile, roles) = req.split();
    let mut next = profile.apply(&user)?;
    if let Some(roles) = roles {
        check_roles(&state, &roles).await?;
        within_reach(&state, &who, &roles).await?;
        if id == who.user.user_id && !roles.iter().any(|r| r == "admin") {
            return Err(ApiError::field(
                Code::Validation003,
                "roles",
                "admins cannot remove their own admin role",
            ));
        }
        next.roles = roles;
    }
    let saved = state.v1.repo.update_user(&next).await.map_err(conflict_on_race)?;
    Ok(ok(view(&state, &saved).await?))
}

/// Deletes a user with their sessions and API keys.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 200, body = super::envelope::Envelope<Done>), (status = 404, body = super::envelope::ErrorBody),
        (status = 409, description = "Admins cannot delete themselves", body = super::envelope::ErrorBody)))]
pub async fn delete(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<Done> {
    if id == who.user.user_id {
        return Err(ApiError::new(Code::Resource003, "admins cannot delete themselves"));
    }
    let user = find(&state, &id).await?;
    within_reach(&state, &who, &user.roles).await?;
    state.v1.repo.delete_user(&user).await.map_err(conflict_on_race)?;
    Ok(ok(Done { ok: true }))
}

/// Creates the configured first admin if no user holds its username. Both the email and the
/// password must be configured: there is never a default password.
pub async fn ensure_admin(state: &AppState, config: &crate::config::IdentityArgs) -> anyhow::Result<()> {
    let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) else {
        return Ok(());
    };
    let repo = &state.v1.repo;
    if repo
        .user_by(maas_store::records::identity::Unique::Username, &config.admin_username)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let account = NewAccount {
        username: config.admin_username.clone(),
        email: email.clone(),
        password: password.clone(),
        first_name: String::new(),
        last_name: String::new(),
        organization: String::new(),
        roles: vec!["admin".into()],
    };
    match create_account(state, account).await {
        Ok(_) => Ok(()),
        // Another instance created it at the same time.
        Err(e) if e.code == Code::Resource002 && e.details.first().is_some_and(|d| d.field == "username") => Ok(()),
        Err(e) => anyhow::bail!("the configured admin is refused: {}", e.message),
    }
}
