use std::sync::Arc;

use maas_sidecar_client::SidecarClient;
use maas_store::records::sgt::SgtRepo;
use maas_store::Stores;

use crate::auth::SecretVerifier;
use crate::config::ApiConfig;
use crate::v1::permissions::RoleCache;
use crate::v1::V1State;
use maas_store::records::identity::IdentityRepo;

/// What every handler gets: built once per process (per Lambda instance), then cloned cheaply.
#[derive(Clone)]
pub struct AppState {
    pub repo: SgtRepo,
    pub sidecar: SidecarClient,
    pub verifier: Arc<SecretVerifier>,
    pub system_key: Arc<str>,
    pub body_limit: usize,
    pub v1: Arc<V1State>,
    pub inference: Arc<crate::inference::InferenceState>,
    pub projects: maas_store::records::projects::ProjectRepo,
    pub tasks: maas_store::records::tasks::TaskRepo,
    pub datasets: maas_store::records::datasets::DatasetRepo,
    /// The model registry.
    pub registry: Arc<crate::registry::RegistryState>,
    /// Open WebSocket chats per user.
    pub ws_connections: Arc<crate::v1::inference_ws::Connections>,
}

impl AppState {
    /// Builds the state, and the first admin when the configuration names one.
    pub async fn new(stores: &Stores, config: &ApiConfig) -> anyhow::Result<Self> {
        let state = AppState {
            repo: SgtRepo::new(stores),
            sidecar: config.sidecar.clone(),
            verifier: Arc::new(SecretVerifier::default()),
            system_key: config.system_key.as_str().into(),
            body_limit: config.body_limit,
            v1: Arc::new(V1State {
                repo: IdentityRepo::new(stores),
                tokens: config.identity.token_keys()?,
                roles: RoleCache::default(),
                limits: config.identity.rate_limits(),
                oauth: crate::v1::oauth::OAuthProviders::from_json(config.identity.oauth_providers.as_deref())?,
            }),
            inference: Arc::new(crate::inference::InferenceState {
                repo: maas_store::records::inference::InferenceRepo::new(stores),
                history_days: config.identity.history_days.max(1),
                counters: Default::default(),
            }),
            projects: maas_store::records::projects::ProjectRepo::new(stores),
            tasks: maas_store::records::tasks::TaskRepo::new(stores),
            datasets: maas_store::records::datasets::DatasetRepo::new(stores),
            registry: Arc::new(crate::registry::RegistryState::new(
                stores,
                &config.system_key,
                config.identity.rate_limits().storage_bytes.max(0) as u64,
            )),
            ws_connections: Arc::default(),
        };
        crate::v1::users::ensure_admin(&state, &config.identity).await?;
        Ok(state)
    }
}
