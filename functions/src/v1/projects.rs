//! Projects (seed 002): create, list, detail, update, delete, and `stats`. Models and
//! deployments name a project with `project_id`; the project counts them, and a project that
//! still holds any cannot be deleted (409 `RESOURCE_003`).

use axum::extract::State;
use maas_store::records::projects::{Counts, Project, MEMBERS};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::accounts::Done;
use super::envelope::{created, iso, ok, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::users::Pagination;
use super::validate;
use crate::state::AppState;

/// Projects a user may hold.
pub const MAX_PROJECTS: usize = 100;

#[derive(Serialize, ToSchema)]
pub struct MemberCounts {
    pub models: u64,
    pub deployments: u64,
    pub datasets: u64,
    pub jobs: u64,
}

impl From<Counts> for MemberCounts {
    fn from(c: Counts) -> Self {
        MemberCounts {
            models: c[0],
            deployments: c[1],
            datasets: c[2],
            jobs: c[3],
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub counts: MemberCounts,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectPage {
    pub items: Vec<ProjectView>,
    pub pagination: Pagination,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectStats {
    pub total_projects: usize,
    /// Members across all the caller's projects.
    pub totals: MemberCounts,
    pub projects: Vec<ProjectView>,
}

#[derive(Deserialize, ToSchema)]
pub struct NewProject {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    #[schema(
        max_length = 2000,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$"
    )]
    pub description: Option<String>,
    #[schema(max_items = 20, value_type = Option<Vec<super::permissions::TagName>>)]
    pub tags: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
pub struct ProjectUpdate {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    #[schema(
        max_length = 2000,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$"
    )]
    pub description: Option<String>,
    #[schema(max_items = 20, value_type = Option<Vec<super::permissions::TagName>>)]
    pub tags: Option<Vec<String>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProjectId {
    pub project_id: String,
}

fn check_name(name: &str) -> Result<String, ApiError> {
    validate::name("name", name, 100)
}

fn check_description(d: &str) -> Result<(), ApiError> {
    validate::prose("description", d, 2000)
}

fn check_tags(tags: &[String]) -> Result<Vec<String>, ApiError> {
    if tags.len() > 20
        || tags
            .iter()
            .any(|t| t.trim().is_empty() || t.chars().count() > 50 || t.chars().any(char::is_control))
    {
        return Err(ApiError::field(
            Code::Validation003,
            "tags",
            "at most 20 tags of 1 to 50 printable characters",
        ));
    }
    Ok(tags.iter().map(|t| t.trim().to_string()).collect())
}

async fn view(state: &AppState, p: &Project) -> Result<ProjectView, ApiError> {
    Ok(ProjectView {
        id: p.project_id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        tags: p.tags.clone(),
        counts: state.projects.counts(&p.project_id).await?.into(),
        created_at: iso(p.created_at / 1000),
        updated_at: iso(p.updated_at / 1000),
    })
}

/// The caller's project; another user's answers 404, as a missing one does.
pub async fn owned(state: &AppState, who: &Principal, id: &str) -> Result<Project, ApiError> {
    match state.projects.get(id).await? {
        Some(p) if p.owner == who.user.user_id => Ok(p),
        _ => Err(ApiError::not_found("project")),
    }
}

/// Checks a `project_id` a model or deployment names: it must be the caller's.
pub async fn check_member_of(state: &AppState, who: &Principal, id: Option<&str>) -> Result<(), ApiError> {
    let Some(id) = id else { return Ok(()) };
    validate::text("project_id", id, 64)?;
    match state.projects.get(id).await? {
        Some(p) if p.owner == who.user.user_id => Ok(()),
        _ => Err(ApiError::field(Code::Resource001, "project_id", "project not found")),
    }
}

/// Moves one member of `kind` from project `old` to `new` (either may be none). A failure is
/// logged: the member is written, and a count off by one beats a lost write.
pub async fn recount(state: &AppState, kind: &str, old: Option<&str>, new: Option<&str>) {
    if old == new {
        return;
    }
    for (project, by) in [(old, -1), (new, 1)] {
        if let Some(p) = project {
            if let Err(e) = state.projects.count(p, kind, by).await {
                tracing::error!(project = %p, kind, error = %e, "cannot count a project's member");
            }
        }
    }
}

/// Creates a project.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = NewProject,
    responses((status = 409, description = "The caller holds 100 projects already", body = super::envelope::ErrorBody),
        (status = 201, body = super::envelope::Envelope<ProjectView>, links(
        ("GetProject" = (operation_id = "v1-projects-get", parameters(("project_id" = "$response.body#/data/id"))))))))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<NewProject>,
) -> ApiResult<ProjectView> {
    let name = check_name(&req.name)?;
    let description = req.description.unwrap_or_default();
    check_description(&description)?;
    let tags = check_tags(&req.tags.unwrap_or_default())?;
    if state.projects.list(&who.user.user_id).await?.len() >= MAX_PROJECTS {
        return Err(ApiError::new(
            Code::Resource003,
            format!("at most {MAX_PROJECTS} projects per user"),
        ));
    }
    let now = maas_store::now_millis();
    let p = Project {
        project_id: uuid::Uuid::new_v4().to_string(),
        owner: who.user.user_id.clone(),
        name,
        description,
        tags,
        created_at: now,
        updated_at: now,
        ver: 0,
    };
    state.projects.create(&p).await?;
    Ok(created(view(&state, &p).await?))
}

/// The caller's projects, oldest first.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(super::params::PageQuery),
    responses((status = 200, body = super::envelope::Envelope<ProjectPage>)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<super::params::PageQuery>,
) -> ApiResult<ProjectPage> {
    let (page, limit) = super::params::page(q.page, q.limit, 1000)?;
    let all = state.projects.list(&who.user.user_id).await?;
    let mut items = Vec::new();
    for p in all
        .iter()
        .skip((page as usize - 1) * limit as usize)
        .take(limit as usize)
    {
        items.push(view(&state, p).await?);
    }
    Ok(ok(ProjectPage {
        items,
        pagination: Pagination::new(page, limit, all.len()),
    }))
}

/// What each of the caller's projects holds, and the totals.
#[utoipa::path(get, path = "/api/v1/projects/stats", tag = "projects",
    responses((status = 200, body = super::envelope::Envelope<ProjectStats>)))]
pub async fn stats(State(state): State<AppState>, who: Principal) -> ApiResult<ProjectStats> {
    let all = state.projects.list(&who.user.user_id).await?;
    let mut projects = Vec::new();
    let mut totals = [0u64; 4];
    for p in &all {
        let v = view(&state, p).await?;
        for (i, n) in [v.counts.models, v.counts.deployments, v.counts.datasets, v.counts.jobs]
            .into_iter()
            .enumerate()
        {
            totals[i] += n;
        }
        projects.push(v);
    }
    Ok(ok(ProjectStats {
        total_projects: all.len(),
        totals: totals.into(),
        projects,
    }))
}

#[utoipa::path(get, path = "/api/v1/projects/{project_id}", tag = "projects", params(ProjectId),
    responses((status = 404, description = "No such project (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<ProjectView>)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ProjectView> {
    let p = owned(&state, &who, &id).await?;
    Ok(ok(view(&state, &p).await?))
}

#[utoipa::path(put, path = "/api/v1/projects/{project_id}", tag = "projects", params(ProjectId), request_body = ProjectUpdate,
    responses((status = 404, description = "No such project (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<ProjectView>)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ProjectUpdate>,
) -> ApiResult<ProjectView> {
    let mut p = owned(&state, &who, &id).await?;
    if let Some(name) = &req.name {
        p.name = check_name(name)?;
    }
    if let Some(d) = req.description {
        check_description(&d)?;
        p.description = d;
    }
    if let Some(tags) = &req.tags {
        p.tags = check_tags(tags)?;
    }
    p.updated_at = maas_store::now_millis();
    let p = state
        .projects
        .update(&p)
        .await
        .map_err(super::profile::conflict_on_race)?;
    Ok(ok(view(&state, &p).await?))
}

/// Deletes an empty project; one that still holds members is 409.
#[utoipa::path(delete, path = "/api/v1/projects/{project_id}", tag = "projects", params(ProjectId),
    responses((status = 404, description = "No such project (another user's is missing too)", body = super::envelope::ErrorBody),
        (status = 409, description = "The project still holds models, deployments, datasets or jobs", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<Done>)))]
pub async fn delete(State(state): State<AppState>, who: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<Done> {
    let p = owned(&state, &who, &id).await?;
    let counts = state.projects.counts(&id).await?;
    if counts.iter().any(|&n| n > 0) {
        let held: Vec<String> = MEMBERS
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        return Err(ApiError::new(
            Code::Resource003,
            format!("the project still holds {}; move or delete them first", held.join(", ")),
        ));
    }
    state
        .projects
        .delete(&p)
        .await
        .map_err(super::profile::conflict_on_race)?;
    Ok(ok(Done { ok: true }))
}
