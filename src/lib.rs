//! `maas`, the local gateway: every route of the route table on one port, an in-process
//! sidecar, and the embedded store by default. Tests start it through [`Gateway::start`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use maas_functions::config::{ApiConfig, IdentityArgs, DEFAULT_BODY_LIMIT};
use maas_functions::{AppState, ROUTES};
use maas_sidecar::{Sidecar, SidecarConfig};
use maas_sidecar_client::SidecarClient;
use maas_store::{StoreConfig, Stores};

pub mod serve;

#[derive(Parser, Clone, Debug)]
#[command(name = "maas", about = "Run the whole maas platform on one machine")]
pub struct Config {
    /// Address to serve on.
    #[arg(long, env = "MAAS_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Where the embedded store (and the generated system key) live.
    #[arg(long, env = "MAAS_DATA_DIR", default_value = "./.maas")]
    pub data_dir: PathBuf,
    /// `embedded` (no services) or `aws` (DynamoDB + S3 via the standard AWS variables).
    #[arg(long, env = "MAAS_STORE", default_value = "embedded", value_parser = ["embedded", "aws"])]
    pub store: String,
    #[arg(long, env = "MAAS_TABLE", default_value = "maas")]
    pub table: String,
    #[arg(long, env = "MAAS_BUCKET", default_value = "maas-blobs")]
    pub bucket: String,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAAS_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Use an external sidecar at this URL instead of the in-process one.
    #[arg(long, env = "MAAS_SIDECAR_URL")]
    pub sidecar_url: Option<String>,
    /// The external sidecar's shared secret.
    #[arg(long, env = "MAAS_SIDECAR_SECRET", hide_env_values = true)]
    pub sidecar_secret: Option<String>,
    /// Run requests the in-process sidecar admits at once (queued or computing); more are
    /// answered "busy" instead of piling up.
    #[arg(long, env = "MAAS_SIDECAR_QUEUE", default_value_t = 256)]
    pub sidecar_queue: usize,
    /// Seconds a client may take to send a request's head, or leave its body idle, before the
    /// connection is cut.
    #[arg(long, env = "MAAS_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub idle_timeout_secs: u64,
    #[command(flatten)]
    pub training: maas_sidecar::TrainingArgs,
    #[command(flatten)]
    pub llm: maas_sidecar::llm::engine::LlmArgs,
    /// The key `/sgt/private/update_auth_token` requires; generated and kept in the data
    /// directory when unset.
    #[arg(long, env = "MAAS_SYSTEM_KEY", hide_env_values = true)]
    pub system_key: Option<String>,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

impl Config {
    pub fn store_config(&self) -> StoreConfig {
        match self.store.as_str() {
            "aws" => StoreConfig::Aws {
                table: self.table.clone(),
                bucket: self.bucket.clone(),
            },
            _ => StoreConfig::Embedded {
                dir: self.data_dir.clone(),
            },
        }
    }
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub system_key: String,
    /// The store it serves from, for tests that look behind the API.
    pub stores: Stores,
    sidecar: Option<Sidecar>,
    server: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        let stores = Stores::open(&config.store_config())
            .await
            .context("opening the store")?;
        let system_key = match &config.system_key {
            Some(k) if !k.is_empty() => k.clone(),
            _ => stored_system_key(&config.data_dir)?,
        };
        let models_dir = config
            .llm
            .models_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("models"));
        let (sidecar, client) = match (&config.sidecar_url, &config.sidecar_secret) {
            (Some(url), Some(secret)) => (None, SidecarClient::new(url, secret)),
            (Some(_), None) => anyhow::bail!("--sidecar-url needs --sidecar-secret"),
            _ => {
                // No listener: the gateway calls it directly, so nothing checks this secret.
                let mut cfg = SidecarConfig::new(random_token());
                cfg.queue = config.sidecar_queue;
                cfg.worker = config.training.worker_config();
                cfg.task_workers = config.training.task_workers;
                cfg.engine = config.llm.engine_config();
                // By default the models scripts/fetch-models put next to the data.
                cfg.models_dir = Some(models_dir.clone());
                // And the registry's models, uploaded into the store (`models/{id}@{version}/`).
                cfg.remote_models = Some(maas_sidecar::RemoteModelsConfig {
                    prefix: maas_functions::registry::MODELS_PREFIX.into(),
                    cache_dir: config.data_dir.join("model-cache"),
                    budget_bytes: config.llm.models_memory_mib << 20,
                });
                let sidecar = Sidecar::start(&stores, None, cfg).await?;
                let client = SidecarClient::in_process(sidecar.compute.clone());
                (Some(sidecar), client)
            }
        };
        let mut identity = config.identity.clone();
        if identity.jwt_keys.as_deref().is_none_or(str::is_empty) {
            identity.jwt_keys = Some(stored_jwt_keys(&config.data_dir)?);
        }
        let api = ApiConfig {
            store: config.store_config(),
            sidecar: client,
            system_key: system_key.clone(),
            body_limit: config.body_limit,
            identity,
        };
        let state = AppState::new(&stores, &api).await?;
        if sidecar.is_some() {
            // The engine here serves this folder's models: the registry lists them as built-ins.
            maas_functions::registry::builtins::register(&state.registry, &models_dir).await?;
        }
        let health = state.sidecar.clone();
        let app = maas_functions::router(state, ROUTES.iter()).route("/health", get(health_check).with_state(health));
        let listener = tokio::net::TcpListener::bind(&config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(serve::serve(
            listener,
            app,
            Duration::from_secs(config.idle_timeout_secs),
        ));
        Ok(Gateway {
            addr,
            system_key,
            stores,
            sidecar,
            server,
        })
    }

    pub fn stop(&self) {
        self.server.abort();
        if let Some(s) = &self.sidecar {
            s.stop();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// 200 once the gateway and the sidecar both answer.
async fn health_check(State(sidecar): State<SidecarClient>) -> (StatusCode, &'static str) {
    match sidecar.health().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "sidecar unavailable"),
    }
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The system key kept in the data directory, created (and printed, once) on first start.
fn stored_system_key(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("system-key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        if !k.trim().is_empty() {
            return Ok(k.trim().to_string());
        }
    }
    std::fs::create_dir_all(dir)?;
    let key = random_token();
    write_private(&path, &key)?;
    println!(
        "MAAS_SYSTEM_KEY was not set; generated one (kept in {}):\n  {key}",
        path.display()
    );
    Ok(key)
}

/// The JWT signing key kept in the data directory, created on first start.
fn stored_jwt_keys(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("jwt-keys");
    if let Ok(k) = std::fs::read_to_string(&path) {
        if !k.trim().is_empty() {
            return Ok(k.trim().to_string());
        }
    }
    std::fs::create_dir_all(dir)?;
    let spec = maas_functions::v1::tokens::TokenKeys::generate_spec();
    write_private(&path, &spec)?;
    Ok(spec)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(contents.as_bytes())
}
