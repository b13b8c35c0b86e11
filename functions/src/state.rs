use std::sync::Arc;

use maas_sidecar_client::SidecarClient;
use maas_store::records::sgt::SgtRepo;
use maas_store::Stores;

use crate::auth::SecretVerifier;
use crate::config::ApiConfig;

/// What every handler gets: built once per process (per Lambda instance), then cloned cheaply.
#[derive(Clone)]
pub struct AppState {
    pub repo: SgtRepo,
    pub sidecar: SidecarClient,
    pub verifier: Arc<SecretVerifier>,
    pub system_key: Arc<str>,
    pub body_limit: usize,
}

impl AppState {
    pub fn new(stores: &Stores, config: &ApiConfig) -> Self {
        AppState {
            repo: SgtRepo::new(stores),
            sidecar: SidecarClient::new(&config.sidecar_url, &config.sidecar_secret),
            verifier: Arc::new(SecretVerifier::default()),
            system_key: config.system_key.as_str().into(),
            body_limit: config.body_limit,
        }
    }
}
