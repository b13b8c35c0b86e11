//! The signed-in user's own profile, quota and usage.

use std::collections::BTreeMap;

use axum::extract::State;
use maas_store::records::identity::User;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::envelope::{iso, ok, ApiError, ApiJson, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::limits::month_and_day;
use super::validate;
use crate::state::AppState;

/// Who a token belongs to, as sign-in answers say it.
#[derive(Serialize, ToSchema, Clone)]
pub struct UserSummary {
    pub id: String,
    pub username: String,
    pub email: String,
    pub roles: Vec<String>,
}

impl UserSummary {
    pub fn of(u: &User) -> Self {
        UserSummary {
            id: u.user_id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            roles: u.roles.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Quota {
    /// API calls allowed per calendar month (UTC).
    pub api_calls_limit: i64,
    /// API calls made this month.
    pub api_calls_used: i64,
    pub storage_limit: i64,
    pub storage_used: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Profile {
    pub id: String,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub avatar_url: String,
    pub organization: String,
    pub roles: Vec<String>,
    /// What the caller may do (an API key's are narrowed to the key).
    pub permissions: Vec<String>,
    pub quota: Quota,
    pub created_at: String,
}

/// Per-user profile view; `permissions` is what the caller may do.
pub async fn profile_of(state: &AppState, user: &User, permissions: Vec<String>) -> Result<Profile, ApiError> {
    let (month, _) = month_and_day(maas_store::now_secs());
    let used = state
        .v1
        .repo
        .counters(&format!("USAGE#{}", user.user_id), &format!("M#{month}"))
        .await?
        .first()
        .map_or(0, |(_, n)| *n);
    let limits = &state.v1.limits;
    let storage_used = state.registry.storage.used(&user.user_id).await?;
    Ok(Profile {
        id: user.user_id.clone(),
        username: user.username.clone(),
        email: user.email.clone(),
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        avatar_url: user.avatar_url.clone(),
        organization: user.organization.clone(),
        roles: user.roles.clone(),
        permissions,
        quota: Quota {
            api_calls_limit: limits.monthly_calls,
            api_calls_used: used,
            storage_limit: limits.storage_bytes,
            storage_used: storage_used as i64,
        },
        created_at: iso(user.created_at),
    })
}

/// The caller's profile, roles and quota (`/auth/me` and `/users/me` are the same).
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", responses((status = 200, body = super::envelope::Envelope<Profile>)))]
pub async fn me(State(state): State<AppState>, who: Principal) -> ApiResult<Profile> {
    Ok(ok(profile_of(&state, &who.user, who.grants.to_vec()).await?))
}

/// The caller's profile (seed 002's path).
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", responses((status = 200, body = super::envelope::Envelope<Profile>)))]
pub async fn auth_me(state: State<AppState>, who: Principal) -> ApiResult<Profile> {
    me(state, who).await
}

pub fn validate_profile(first: &str, last: &str, org: &str, avatar: &str) -> Result<(), ApiError> {
    validate::text("first_name", first, 100)?;
    validate::text("last_name", last, 100)?;
    validate::text("organization", org, 200)?;
    validate::text("avatar_url", avatar, 2048)?;
    if !avatar.is_empty() && !avatar.starts_with("https://") {
        return Err(
            ApiError::field(Code::Validation002, "avatar_url", "avatar_url must be an https URL").unprocessable(),
        );
    }
    Ok(())
}

/// Fields a user may change about themselves; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
pub struct ProfileUpdate {
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub first_name: Option<String>,
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub last_name: Option<String>,
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub organization: Option<String>,
    /// An https URL, or empty to clear it.
    #[schema(max_length = 2048, pattern = "^(https://[^\\u0000-\\u0020\\u007F-\\u009F]*)?$")]
    pub avatar_url: Option<String>,
}

impl ProfileUpdate {
    pub fn apply(self, user: &User) -> Result<User, ApiError> {
        let next = User {
            first_name: self.first_name.unwrap_or_else(|| user.first_name.clone()),
            last_name: self.last_name.unwrap_or_else(|| user.last_name.clone()),
            organization: self.organization.unwrap_or_else(|| user.organization.clone()),
            avatar_url: self.avatar_url.unwrap_or_else(|| user.avatar_url.clone()),
            ..user.clone()
        };
        validate_profile(&next.first_name, &next.last_name, &next.organization, &next.avatar_url)?;
        Ok(next)
    }
}

/// Changes the caller's profile.
#[utoipa::path(put, path = "/api/v1/users/me", tag = "users", request_body = ProfileUpdate,
    responses((status = 200, body = super::envelope::Envelope<Profile>)))]
pub async fn update_me(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<ProfileUpdate>,
) -> ApiResult<Profile> {
    let next = req.apply(&who.user)?;
    let saved = state.v1.repo.update_user(&next).await.map_err(conflict_on_race)?;
    Ok(ok(profile_of(&state, &saved, who.grants.to_vec()).await?))
}

/// A concurrent change won: the client should re-read and retry.
pub fn conflict_on_race(e: maas_store::StoreError) -> ApiError {
    match e {
        maas_store::StoreError::ConditionFailed => {
            ApiError::new(Code::Resource003, "changed concurrently; read it again and retry")
        }
        e => e.into(),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// `Nd`, 1 to 366 days; 30d by default.
    #[param(pattern = "^([1-9]|[1-9][0-9]|[12][0-9][0-9]|3[0-5][0-9]|36[0-6])d$")]
    pub period: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DayUsage {
    pub date: String,
    pub calls: i64,
    /// Calls by rate-limit class (`inference`, `training`, `other`).
    pub by_class: BTreeMap<String, i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Usage {
    pub start_date: String,
    pub end_date: String,
    pub total_calls: i64,
    pub days: Vec<DayUsage>,
}

fn parse_date(field: &str, s: &str) -> Result<time::Date, ApiError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &format)
        .map_err(|_| ApiError::field(Code::Validation002, field, format!("{field} must be YYYY-MM-DD")).unprocessable())
}

async fn usage(state: &AppState, user: &User, start: time::Date, end: time::Date) -> Result<Usage, ApiError> {
    if end < start || (end - start).whole_days() > 366 {
        return Err(ApiError::field(
            Code::Validation003,
            "end_date",
            "the range must be 0 to 366 days, start first",
        ));
    }
    let counters = state.v1.repo.counters(&format!("USAGE#{}", user.user_id), "D#").await?;
    let mut days: BTreeMap<String, DayUsage> = BTreeMap::new();
    for (window, n) in counters {
        let Some((date, class)) = window.trim_start_matches("D#").split_once('#') else {
            continue;
        };
        let Ok(d) = parse_date("date", date) else { continue };
        if d < start || d > end {
            continue;
        }
        let day = days.entry(date.to_string()).or_insert_with(|| DayUsage {
            date: date.to_string(),
            calls: 0,
            by_class: BTreeMap::new(),
        });
        day.calls += n;
        *day.by_class.entry(class.to_string()).or_default() += n;
    }
    Ok(Usage {
        start_date: start.to_string(),
        end_date: end.to_string(),
        total_calls: days.values().map(|d| d.calls).sum(),
        days: days.into_values().collect(),
    })
}

/// The caller's API calls over the last `period` days, by day and class.
#[utoipa::path(get, path = "/api/v1/users/me/stats", tag = "users", params(StatsQuery),
    responses((status = 200, body = super::envelope::Envelope<Usage>)))]
pub async fn stats(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Usage> {
    let period = q.period.unwrap_or_else(|| "30d".into());
    // Not `Nd` at all is ill-formatted (002); a day count out of range is refused (003).
    let days: i64 = period
        .strip_suffix('d')
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| ApiError::field(Code::Validation002, "period", "period must look like 30d").unprocessable())?;
    if !(1..=366).contains(&days) {
        return Err(ApiError::field(Code::Validation003, "period", "period must be 1d to 366d").unprocessable());
    }
    let today = time::OffsetDateTime::now_utc().date();
    let start = today - time::Duration::days(days - 1);
    Ok(ok(usage(&state, &who.user, start, today).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC).
    #[param(format = Date)]
    pub start_date: String,
    /// Last day, inclusive; at most 366 days after the first.
    #[param(format = Date)]
    pub end_date: String,
}

/// The caller's API calls between two dates.
#[utoipa::path(get, path = "/api/v1/users/me/api-usage", tag = "users", params(UsageQuery),
    responses((status = 200, body = super::envelope::Envelope<Usage>)))]
pub async fn api_usage(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Usage> {
    let start = parse_date("start_date", &q.start_date)?;
    let end = parse_date("end_date", &q.end_date)?;
    Ok(ok(usage(&state, &who.user, start, end).await?))
}
