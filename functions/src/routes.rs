//! The route table: every endpoint, declared once.

use axum::routing::MethodRouter;
use axum::Router;

use utoipa_axum::router::UtoipaMethodRouter;

use crate::body::BodyBudget;
use crate::http::{common_layers, sgt_layers};
use crate::openai;
use crate::sgt::handlers as sgt;
use crate::state::AppState;
use crate::v1::envelope::ApiError;
use crate::v1::guard::{guard, Access, Guarded};
use crate::v1::limits::Class;
use crate::v1::{
    accounts, api_keys, dataset_quality, dataset_versions, datasets, deployments, inference, models, oauth, profile,
    projects, roles, system, tasks, users, v1_layers, V1_BODY_LIMIT,
};

/// One endpoint. `name` is also its Lambda binary's name, its SAM function's binary and its
/// sample event's file name.
pub struct Route {
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// The rate-limit budget a v1 route spends. SGT routes are metered only for platform API
    /// keys, by the permission they need (`sgt::handlers::meter`), so theirs is unused.
    pub class: Class,
    pub endpoint: Endpoint,
}

/// A route's handler: SGT handlers are plain; v1 handlers carry their OpenAPI description;
/// OpenAI's (`/v1`) follow OpenAI's own specification.
pub enum Endpoint {
    Sgt(fn() -> MethodRouter<AppState>),
    V1(fn() -> UtoipaMethodRouter<AppState>),
    OpenAi(fn() -> MethodRouter<AppState>),
}

macro_rules! sgt {
    ($name:literal, $path:literal, $handler:path) => {
        Route {
            name: $name,
            method: "POST",
            path: $path,
            access: Access::Sgt,
            class: Class::Other,
            endpoint: Endpoint::Sgt(|| axum::routing::post($handler)),
        }
    };
}

macro_rules! v1 {
    ($name:literal, $method:literal, $path:literal, $access:expr, $class:ident, $handler:path) => {
        Route {
            name: $name,
            method: $method,
            path: $path,
            access: $access,
            class: Class::$class,
            endpoint: Endpoint::V1(|| utoipa_axum::routes!($handler)),
        }
    };
}

macro_rules! openai {
    ($name:literal, $method:ident, $path:literal, $permission:literal, $handler:path) => {
        Route {
            name: $name,
            method: const_upper!($method),
            path: $path,
            access: Access::Permission($permission),
            class: Class::Inference,
            endpoint: Endpoint::OpenAi(|| axum::routing::$method($handler)),
        }
    };
}

macro_rules! const_upper {
    (get) => {
        "GET"
    };
    (post) => {
        "POST"
    };
}

const fn needs(permission: &'static str) -> Access {
    Access::Permission(permission)
}

pub static ROUTES: &[Route] = &[
    sgt!(
        "sgt-update-auth-token",
        "/sgt/private/update_auth_token",
        sgt::update_auth_token
    ),
    sgt!(
        "sgt-check-auth-token",
        "/sgt/public/check_auth_token",
        sgt::check_auth_token
    ),
    sgt!("sgt-create-model", "/sgt/public/create_sgt_model", sgt::create_model),
    sgt!("sgt-delete-model", "/sgt/public/delete_sgt_model", sgt::delete_model),
    sgt!(
        "sgt-update-model-client-data",
        "/sgt/public/update_sgt_model_client_data",
        sgt::update_client_data
    ),
    sgt!(
        "sgt-read-my-models",
        "/sgt/public/read_my_sgt_model",
        sgt::read_my_models
    ),
    sgt!(
        "sgt-read-public-models",
        "/sgt/public/read_public_sgt_model",
        sgt::read_public_models
    ),
    sgt!(
        "sgt-clone-model-to-mine",
        "/sgt/public/clone_sgt_model_to_mine",
        sgt::clone_model_to_mine
    ),
    sgt!("sgt-run-model", "/sgt/public/run_sgt_model", sgt::run_model),
    sgt!(
        "sgt-upload-train-data",
        "/sgt/public/upload_sgt_model_train_data",
        sgt::upload_train_data
    ),
    sgt!(
        "sgt-list-model-type",
        "/sgt/public/list_model_type",
        sgt::list_model_type
    ),
    v1!(
        "v1-auth-register",
        "POST",
        "/api/v1/auth/register",
        Access::Public,
        Auth,
        accounts::register
    ),
    v1!(
        "v1-auth-login",
        "POST",
        "/api/v1/auth/login",
        Access::Public,
        Auth,
        accounts::login
    ),
    v1!(
        "v1-auth-token",
        "POST",
        "/api/v1/auth/token",
        Access::Public,
        Auth,
        accounts::token
    ),
    v1!(
        "v1-login",
        "POST",
        "/api/v1/login",
        Access::Public,
        Auth,
        accounts::login_legacy
    ),
    v1!(
        "v1-auth-refresh",
        "POST",
        "/api/v1/auth/refresh",
        Access::Public,
        Auth,
        accounts::refresh
    ),
    v1!(
        "v1-auth-oauth",
        "POST",
        "/api/v1/auth/oauth/{provider}",
        Access::Public,
        Auth,
        oauth::oauth_login
    ),
    v1!(
        "v1-auth-logout",
        "POST",
        "/api/v1/auth/logout",
        needs("profile:read"),
        Other,
        accounts::logout
    ),
    v1!(
        "v1-auth-me",
        "GET",
        "/api/v1/auth/me",
        needs("profile:read"),
        Other,
        profile::auth_me
    ),
    v1!(
        "v1-users-me",
        "GET",
        "/api/v1/users/me",
        needs("profile:read"),
        Other,
        profile::me
    ),
    v1!(
        "v1-users-me-update",
        "PUT",
        "/api/v1/users/me",
        needs("profile:write"),
        Other,
        profile::update_me
    ),
    v1!(
        "v1-users-me-password",
        "PUT",
        "/api/v1/users/me/password",
        needs("profile:write"),
        Other,
        accounts::change_password
    ),
    v1!(
        "v1-users-me-stats",
        "GET",
        "/api/v1/users/me/stats",
        needs("usage:read"),
        Other,
        profile::stats
    ),
    v1!(
        "v1-users-me-api-usage",
        "GET",
        "/api/v1/users/me/api-usage",
        needs("usage:read"),
        Other,
        profile::api_usage
    ),
    v1!(
        "v1-api-keys-create",
        "POST",
        "/api/v1/users/me/api-keys",
        needs("apikey:write"),
        Other,
        api_keys::create
    ),
    v1!(
        "v1-api-keys-list",
        "GET",
        "/api/v1/users/me/api-keys",
        needs("apikey:read"),
        Other,
        api_keys::list
    ),
    v1!(
        "v1-api-keys-delete",
        "DELETE",
        "/api/v1/users/me/api-keys/{key_id}",
        needs("apikey:write"),
        Other,
        api_keys::delete
    ),
    v1!(
        "v1-users-list",
        "GET",
        "/api/v1/users",
        needs("users:read"),
        Other,
        users::list
    ),
    v1!(
        "v1-users-create",
        "POST",
        "/api/v1/users",
        needs("users:write"),
        Other,
        users::create
    ),
    v1!(
        "v1-users-get",
        "GET",
        "/api/v1/users/{id}",
        needs("users:read"),
        Other,
        users::get
    ),
    v1!(
        "v1-users-update",
        "PUT",
        "/api/v1/users/{id}",
        needs("users:write"),
        Other,
        users::update
    ),
    v1!(
        "v1-users-delete",
        "DELETE",
        "/api/v1/users/{id}",
        needs("users:write"),
        Other,
        users::delete
    ),
    v1!(
        "v1-roles-list",
        "GET",
        "/api/v1/permissions/roles",
        needs("roles:read"),
        Other,
        roles::list
    ),
    v1!(
        "v1-roles-create",
        "POST",
        "/api/v1/permissions/roles",
        needs("roles:write"),
        Other,
        roles::create
    ),
    v1!(
        "v1-roles-init",
        "POST",
        "/api/v1/permissions/roles/init",
        needs("roles:write"),
        Other,
        roles::init
    ),
    v1!(
        "v1-roles-get",
        "GET",
        "/api/v1/permissions/roles/{id}",
        needs("roles:read"),
        Other,
        roles::get
    ),
    v1!(
        "v1-roles-update",
        "PUT",
        "/api/v1/permissions/roles/{id}",
        needs("roles:write"),
        Other,
        roles::update
    ),
    v1!(
        "v1-roles-delete",
        "DELETE",
        "/api/v1/permissions/roles/{id}",
        needs("roles:write"),
        Other,
        roles::delete
    ),
    v1!(
        "v1-permissions-check",
        "POST",
        "/api/v1/permissions/check",
        needs("profile:read"),
        Other,
        roles::check
    ),
    v1!(
        "v1-system-health",
        "GET",
        "/api/v1/system/health",
        Access::Public,
        Other,
        system::health
    ),
    v1!(
        "v1-openapi",
        "GET",
        "/api/v1/openapi.json",
        Access::Public,
        Other,
        system::openapi
    ),
    v1!(
        "v1-inference-deployments-create",
        "POST",
        "/api/v1/inference/deployments",
        needs("deployment:write"),
        Other,
        deployments::create
    ),
    v1!(
        "v1-inference-deployments-list",
        "GET",
        "/api/v1/inference/deployments",
        needs("deployment:read"),
        Other,
        deployments::list
    ),
    v1!(
        "v1-inference-deployments-get",
        "GET",
        "/api/v1/inference/deployments/{deployment_id}",
        needs("deployment:read"),
        Other,
        deployments::get
    ),
    v1!(
        "v1-inference-deployments-update",
        "PUT",
        "/api/v1/inference/deployments/{deployment_id}",
        needs("deployment:write"),
        Other,
        deployments::update
    ),
    v1!(
        "v1-inference-deployments-status",
        "GET",
        "/api/v1/inference/deployments/{deployment_id}/status",
        needs("deployment:read"),
        Other,
        deployments::status
    ),
    v1!(
        "v1-inference-deployments-metrics",
        "GET",
        "/api/v1/inference/deployments/{deployment_id}/metrics",
        needs("deployment:read"),
        Other,
        deployments::metrics
    ),
    v1!(
        "v1-inference-models",
        "GET",
        "/api/v1/inference/models",
        needs("model:read"),
        Other,
        inference::models
    ),
    v1!(
        "v1-inference-chat",
        "POST",
        "/api/v1/inference/chat",
        needs("inference:create"),
        Inference,
        inference::chat
    ),
    v1!(
        "v1-inference-completion",
        "POST",
        "/api/v1/inference/completion",
        needs("inference:create"),
        Inference,
        inference::completion
    ),
    v1!(
        "v1-inference-embedding",
        "POST",
        "/api/v1/inference/embedding",
        needs("inference:create"),
        Inference,
        inference::embedding
    ),
    v1!(
        "v1-inference-batch",
        "POST",
        "/api/v1/inference/batch",
        needs("inference:create"),
        Inference,
        inference::batch
    ),
    v1!(
        "v1-inference-generate",
        "POST",
        "/api/v1/inference/generate",
        needs("inference:create"),
        Inference,
        inference::generate
    ),
    v1!(
        "v1-inference-history",
        "GET",
        "/api/v1/inference/history",
        needs("usage:read"),
        Other,
        inference::history
    ),
    v1!(
        "v1-generate",
        "POST",
        "/api/v1/generate",
        needs("inference:create"),
        Inference,
        inference::seed_generate
    ),
    v1!(
        "v1-generate-batch",
        "POST",
        "/api/v1/generate/batch",
        needs("inference:create"),
        Inference,
        inference::seed_generate_batch
    ),
    v1!(
        "v1-inference-deployments-delete",
        "DELETE",
        "/api/v1/inference/deployments/{deployment_id}",
        needs("deployment:write"),
        Other,
        deployments::delete
    ),
    v1!(
        "v1-projects-list",
        "GET",
        "/api/v1/projects",
        needs("project:read"),
        Other,
        projects::list
    ),
    v1!(
        "v1-projects-create",
        "POST",
        "/api/v1/projects",
        needs("project:write"),
        Other,
        projects::create
    ),
    v1!(
        "v1-projects-stats",
        "GET",
        "/api/v1/projects/stats",
        needs("project:read"),
        Other,
        projects::stats
    ),
    v1!(
        "v1-projects-get",
        "GET",
        "/api/v1/projects/{project_id}",
        needs("project:read"),
        Other,
        projects::get
    ),
    v1!(
        "v1-projects-update",
        "PUT",
        "/api/v1/projects/{project_id}",
        needs("project:write"),
        Other,
        projects::update
    ),
    v1!(
        "v1-projects-delete",
        "DELETE",
        "/api/v1/projects/{project_id}",
        needs("project:write"),
        Other,
        projects::delete
    ),
    v1!(
        "v1-tasks-list",
        "GET",
        "/api/v1/tasks",
        needs("task:read"),
        Other,
        tasks::list
    ),
    v1!(
        "v1-tasks-get",
        "GET",
        "/api/v1/tasks/{task_id}",
        needs("task:read"),
        Other,
        tasks::get
    ),
    v1!(
        "v1-tasks-update",
        "PUT",
        "/api/v1/tasks/{task_id}",
        needs("task:write"),
        Other,
        tasks::update
    ),
    v1!(
        "v1-tasks-delete",
        "DELETE",
        "/api/v1/tasks/{task_id}",
        needs("task:write"),
        Other,
        tasks::delete
    ),
    v1!(
        "v1-tasks-logs",
        "GET",
        "/api/v1/tasks/{task_id}/logs",
        needs("task:read"),
        Other,
        tasks::logs
    ),
    v1!(
        "v1-datasets-list",
        "GET",
        "/api/v1/datasets",
        needs("dataset:read"),
        Other,
        datasets::list
    ),
    v1!(
        "v1-datasets-create",
        "POST",
        "/api/v1/datasets",
        needs("dataset:write"),
        Other,
        datasets::create
    ),
    v1!(
        "v1-datasets-upload",
        "POST",
        "/api/v1/datasets/upload",
        needs("dataset:write"),
        Other,
        datasets::upload
    ),
    v1!(
        "v1-datasets-get",
        "GET",
        "/api/v1/datasets/{dataset_id}",
        needs("dataset:read"),
        Other,
        datasets::get
    ),
    v1!(
        "v1-datasets-complete",
        "POST",
        "/api/v1/datasets/{dataset_id}/complete",
        needs("dataset:write"),
        Other,
        datasets::complete
    ),
    v1!(
        "v1-datasets-delete",
        "DELETE",
        "/api/v1/datasets/{dataset_id}",
        needs("dataset:write"),
        Other,
        datasets::delete
    ),
    v1!(
        "v1-datasets-versions-list",
        "GET",
        "/api/v1/datasets/versions",
        needs("dataset:read"),
        Other,
        dataset_versions::list
    ),
    v1!(
        "v1-datasets-versions-create",
        "POST",
        "/api/v1/datasets/versions",
        needs("dataset:write"),
        Other,
        dataset_versions::create
    ),
    v1!(
        "v1-datasets-versions-get",
        "GET",
        "/api/v1/datasets/versions/{version_id}",
        needs("dataset:read"),
        Other,
        dataset_versions::get
    ),
    v1!(
        "v1-datasets-versions-delete",
        "DELETE",
        "/api/v1/datasets/versions/{version_id}",
        needs("dataset:write"),
        Other,
        dataset_versions::delete
    ),
    v1!(
        "v1-datasets-process",
        "POST",
        "/api/v1/datasets/process",
        needs("dataset:write"),
        Other,
        dataset_versions::process
    ),
    v1!(
        "v1-datasets-quality-check",
        "POST",
        "/api/v1/datasets/quality/check",
        needs("dataset:read"),
        Other,
        dataset_quality::check
    ),
    v1!(
        "v1-datasets-quality-quick",
        "GET",
        "/api/v1/datasets/quality/quick",
        needs("dataset:read"),
        Other,
        dataset_quality::quick
    ),
    v1!(
        "v1-models-list",
        "GET",
        "/api/v1/models",
        needs("model:read"),
        Other,
        models::list
    ),
    v1!(
        "v1-models-create",
        "POST",
        "/api/v1/models",
        needs("model:write"),
        Other,
        models::create
    ),
    v1!(
        "v1-models-get",
        "GET",
        "/api/v1/models/{model_id}",
        needs("model:read"),
        Other,
        models::get
    ),
    v1!(
        "v1-models-update",
        "PUT",
        "/api/v1/models/{model_id}",
        needs("model:write"),
        Other,
        models::update
    ),
    v1!(
        "v1-models-versions-create",
        "POST",
        "/api/v1/models/{model_id}/versions",
        needs("model:write"),
        Other,
        models::create_version
    ),
    v1!(
        "v1-models-versions-complete",
        "POST",
        "/api/v1/models/{model_id}/versions/{version}/complete",
        needs("model:write"),
        Other,
        models::complete_upload
    ),
    v1!(
        "v1-models-versions-list",
        "GET",
        "/api/v1/models/{model_id}/versions",
        needs("model:read"),
        Other,
        models::list_versions
    ),
    v1!(
        "v1-models-versions-download",
        "GET",
        "/api/v1/models/{model_id}/versions/{version}/download",
        needs("model:read"),
        Other,
        models::download
    ),
    v1!(
        "v1-models-like",
        "POST",
        "/api/v1/models/{model_id}/like",
        needs("model:read"),
        Other,
        models::like
    ),
    v1!(
        "v1-models-unlike",
        "DELETE",
        "/api/v1/models/{model_id}/like",
        needs("model:read"),
        Other,
        models::unlike
    ),
    v1!(
        "v1-models-clone",
        "POST",
        "/api/v1/models/{model_id}/clone",
        needs("model:write"),
        Other,
        models::clone
    ),
    v1!(
        "v1-models-delete",
        "DELETE",
        "/api/v1/models/{model_id}",
        needs("model:write"),
        Other,
        models::delete
    ),
    openai!(
        "openai-models-list",
        get,
        "/v1/models",
        "model:read",
        openai::models::list
    ),
    openai!(
        "openai-models-get",
        get,
        "/v1/models/{model}",
        "model:read",
        openai::models::retrieve
    ),
    openai!(
        "openai-chat-completions",
        post,
        "/v1/chat/completions",
        "inference:create",
        openai::chat::create
    ),
    openai!(
        "openai-completions",
        post,
        "/v1/completions",
        "inference:create",
        openai::completions::create
    ),
    openai!(
        "openai-embeddings",
        post,
        "/v1/embeddings",
        "inference:create",
        openai::embeddings::create
    ),
];

/// The routes whose answers may stream (SSE). In AWS each runs under Lambda response streaming
/// behind a function URL, reached through the stack's CloudFront front door: API Gateway's HTTP
/// API buffers a whole response, which would hold every token back to the end.
pub const STREAMING: &[&str] = &[
    "openai-chat-completions",
    "openai-completions",
    "v1-inference-chat",
    "v1-inference-completion",
];

impl Route {
    pub fn streams(&self) -> bool {
        STREAMING.contains(&self.name)
    }
}

pub fn find(name: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.name == name)
}

/// The router for `routes` (all of them in the gateway, one in a Lambda), with every layer.
pub fn router<'a>(state: AppState, routes: impl IntoIterator<Item = &'a Route>) -> Router {
    let body_limit = state.body_limit;
    let (mut sgt_router, mut v1_router, mut openai_router) = (Router::new(), Router::new(), Router::new());
    let guarded = |route: &Route, render: fn(ApiError) -> axum::response::Response| {
        let guarded = Guarded {
            state: state.clone(),
            access: route.access,
            class: route.class,
            render,
        };
        axum::middleware::from_fn_with_state(guarded, guard)
    };
    for route in routes {
        match route.endpoint {
            Endpoint::Sgt(handler) => sgt_router = sgt_router.route(route.path, handler()),
            Endpoint::V1(endpoint) => {
                let (_, _, method_router) = endpoint();
                let render = |e: ApiError| axum::response::IntoResponse::into_response(e);
                v1_router = v1_router.route(route.path, method_router.route_layer(guarded(route, render)));
            }
            Endpoint::OpenAi(handler) => {
                let render = openai::error::render_api_error;
                openai_router = openai_router.route(route.path, handler().route_layer(guarded(route, render)));
            }
        }
    }
    let openai_router =
        openai::layers(openai_router).layer(axum::extract::DefaultBodyLimit::max(openai::BODY_LIMIT.min(body_limit)));
    let app = sgt_layers(sgt_router, body_limit)
        .merge(v1_layers(v1_router, V1_BODY_LIMIT.min(body_limit)))
        .merge(openai_router);
    // Not in the route table, as only a long-running `maas` can answer them: a WebSocket
    // cannot pass through AWS's HTTP API (see `v1::inference_ws`), and a Lambda instance's
    // counters die with it.
    let ws = axum::routing::get(crate::v1::inference_ws::upgrade);
    let app = app
        .route("/v1/inference/stream", ws.clone())
        .route("/api/v1/inference/stream", ws)
        .route("/metrics", axum::routing::get(crate::inference::metrics_endpoint))
        .route("/blobs/{*key}", axum::routing::get(crate::registry::signed::serve))
        .route(
            "/blobs/uploads/{upload}/{part}",
            axum::routing::put(crate::registry::uploads::put_part),
        );
    let app = app.layer(axum::Extension(BodyBudget::for_limit(body_limit)));
    common_layers(app.fallback(not_found).with_state(state))
}

/// Unknown paths answer 404 in their surface's shape.
async fn not_found(req: axum::extract::Request) -> axum::response::Response {
    if req.uri().path().starts_with("/v1/") {
        openai::not_found(req).await
    } else {
        crate::v1::not_found(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_and_paths_are_unique_and_well_formed() {
        let mut names: Vec<_> = ROUTES.iter().map(|r| r.name).collect();
        let mut paths: Vec<_> = ROUTES.iter().map(|r| (r.method, r.path)).collect();
        names.sort();
        names.dedup();
        paths.sort();
        paths.dedup();
        assert_eq!((names.len(), paths.len()), (ROUTES.len(), ROUTES.len()));
        for r in ROUTES {
            assert!(
                r.path.starts_with('/')
                    && r.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                r.name
            );
        }
        assert_eq!(ROUTES.iter().filter(|r| r.path.starts_with("/sgt/")).count(), 11);
    }

    #[test]
    fn every_v1_route_is_documented_at_its_own_method_and_path() {
        for r in ROUTES {
            let endpoint = match r.endpoint {
                Endpoint::V1(endpoint) => endpoint,
                Endpoint::Sgt(_) => {
                    assert!(r.path.starts_with("/sgt/"), "{}", r.name);
                    continue;
                }
                Endpoint::OpenAi(_) => {
                    assert!(r.path.starts_with("/v1/"), "{}", r.name);
                    continue;
                }
            };
            assert!(r.path.starts_with("/api/v1/"), "{}", r.name);
            let (_, paths, _) = endpoint();
            let item = paths
                .paths
                .get(r.path)
                .unwrap_or_else(|| panic!("{} documents another path", r.name));
            let op = match r.method {
                "GET" => &item.get,
                "POST" => &item.post,
                "PUT" => &item.put,
                "DELETE" => &item.delete,
                m => panic!("unexpected method {m}"),
            };
            assert!(op.is_some(), "{} is not documented as {}", r.name, r.method);
        }
    }

    #[test]
    fn every_response_link_names_an_operation_and_its_parameters() {
        let doc = crate::v1::openapi::document();
        let operations: std::collections::HashMap<&str, &serde_json::Value> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| (op["operationId"].as_str().unwrap(), op))
            .collect();
        let mut links = 0;
        for op in operations.values() {
            for response in op["responses"].as_object().unwrap().values() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = operations[link["operationId"].as_str().expect(name)];
                    for param in link["parameters"].as_object().unwrap().keys() {
                        let mut declared = target["parameters"].as_array().into_iter().flatten();
                        assert!(declared.any(|p| p["name"] == *param), "{name}: no parameter {param}");
                    }
                    links += 1;
                }
            }
        }
        assert!(links >= 4, "only {links} links");
    }
}
