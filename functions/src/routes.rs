//! The route table: every endpoint, declared once.

use axum::routing::MethodRouter;
use axum::Router;

use crate::http::{common_layers, sgt_layers};
use crate::sgt::handlers as sgt;
use crate::state::AppState;

/// One endpoint. `name` is also its Lambda binary's name, its SAM function's binary and its
/// sample event's file name.
pub struct Route {
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub handler: fn() -> MethodRouter<AppState>,
}

use axum::routing::post;

pub static ROUTES: &[Route] = &[
    Route {
        name: "sgt-update-auth-token",
        method: "POST",
        path: "/sgt/private/update_auth_token",
        handler: || post(sgt::update_auth_token),
    },
    Route {
        name: "sgt-check-auth-token",
        method: "POST",
        path: "/sgt/public/check_auth_token",
        handler: || post(sgt::check_auth_token),
    },
    Route {
        name: "sgt-create-model",
        method: "POST",
        path: "/sgt/public/create_sgt_model",
        handler: || post(sgt::create_model),
    },
    Route {
        name: "sgt-delete-model",
        method: "POST",
        path: "/sgt/public/delete_sgt_model",
        handler: || post(sgt::delete_model),
    },
    Route {
        name: "sgt-update-model-client-data",
        method: "POST",
        path: "/sgt/public/update_sgt_model_client_data",
        handler: || post(sgt::update_client_data),
    },
    Route {
        name: "sgt-read-my-models",
        method: "POST",
        path: "/sgt/public/read_my_sgt_model",
        handler: || post(sgt::read_my_models),
    },
    Route {
        name: "sgt-read-public-models",
        method: "POST",
        path: "/sgt/public/read_public_sgt_model",
        handler: || post(sgt::read_public_models),
    },
    Route {
        name: "sgt-clone-model-to-mine",
        method: "POST",
        path: "/sgt/public/clone_sgt_model_to_mine",
        handler: || post(sgt::clone_model_to_mine),
    },
    Route {
        name: "sgt-run-model",
        method: "POST",
        path: "/sgt/public/run_sgt_model",
        handler: || post(sgt::run_model),
    },
    Route {
        name: "sgt-upload-train-data",
        method: "POST",
        path: "/sgt/public/upload_sgt_model_train_data",
        handler: || post(sgt::upload_train_data),
    },
    Route {
        name: "sgt-list-model-type",
        method: "POST",
        path: "/sgt/public/list_model_type",
        handler: || post(sgt::list_model_type),
    },
];

pub fn find(name: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.name == name)
}

/// The router for `routes` (all of them in the gateway, one in a Lambda), with every layer.
pub fn router<'a>(state: AppState, routes: impl IntoIterator<Item = &'a Route>) -> Router {
    let body_limit = state.body_limit;
    let mut r = Router::new();
    for route in routes {
        r = r.route(route.path, (route.handler)());
    }
    common_layers(sgt_layers(r, body_limit).with_state(state))
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
                r.path.starts_with('/') && r.name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{}",
                r.name
            );
        }
        assert_eq!(ROUTES.iter().filter(|r| r.path.starts_with("/sgt/")).count(), 11);
    }
}
