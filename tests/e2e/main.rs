//! End-to-end tests over real HTTP against the gateway, on the embedded store and on the
//! LocalStack-compatible endpoint.

mod fixtures;
mod support;

mod crash;
mod datasets;
mod events;
mod inference;
mod learning;
mod models;
mod oauth;
mod oauth_provider;
mod openai;
mod projects;
mod sgt;
mod task_crash;
mod v1;
mod v1_bodies;
