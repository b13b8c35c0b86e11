//! The maas API. Every endpoint is declared once in [`routes::ROUTES`]; from that table come
//! the local gateway's router, one Lambda binary per endpoint, and the checks that
//! `infra/template.yaml` and `events/` stay in step.

pub mod auth;
pub mod body;
pub mod config;
pub mod credentials;
pub mod failures;
pub mod http;
pub mod inference;
pub mod lambda;
pub mod openai;
pub mod registry;
pub mod routes;
pub mod sgt;
pub mod state;
pub mod v1;

pub use routes::{router, Route, ROUTES};
pub use state::AppState;
