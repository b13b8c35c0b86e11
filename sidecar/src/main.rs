//! The standalone sidecar, for deployments where the API runs as Lambdas.

use clap::Parser;
use maas_store::{StoreConfig, Stores};

#[derive(Parser)]
#[command(about = "maas sidecar: SGT training and inference")]
struct Args {
    #[arg(long, env = "MAAS_SIDECAR_ADDR", default_value = "127.0.0.1:9090")]
    addr: String,
    #[arg(long, env = "MAAS_STORE", default_value = "aws", value_parser = ["aws", "embedded"])]
    store: String,
    #[arg(long, env = "MAAS_DATA_DIR", default_value = "./.maas")]
    data_dir: std::path::PathBuf,
    #[arg(long, env = "MAAS_TABLE", default_value = "maas")]
    table: String,
    #[arg(long, env = "MAAS_BUCKET", default_value = "maas-blobs")]
    bucket: String,
    /// Shared secret the API functions present.
    #[arg(long, env = "MAAS_SIDECAR_SECRET", hide_env_values = true)]
    secret: String,
    #[command(flatten)]
    training: maas_sidecar::TrainingArgs,
    #[command(flatten)]
    llm: maas_sidecar::llm::engine::LlmArgs,
    #[arg(long, env = "MAAS_TRAINERS", default_value_t = 1)]
    trainers: usize,
    /// Also serve the models kept in the bucket under this prefix (`<prefix><id>/model.gguf`,
    /// or a model folder), each copied to `<data-dir>/models` and loaded when first asked for.
    #[arg(long, env = "MAAS_MODELS_PREFIX")]
    models_prefix: Option<String>,
}

fn main() -> anyhow::Result<()> {
    maas_sidecar::block_on(run())?
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let store = match args.store.as_str() {
        "embedded" => StoreConfig::Embedded {
            dir: args.data_dir.clone(),
        },
        _ => StoreConfig::Aws {
            table: args.table,
            bucket: args.bucket,
        },
    };
    let stores = Stores::open(&store).await?;
    let mut cfg = maas_sidecar::SidecarConfig::new(args.secret);
    cfg.worker = args.training.worker_config();
    cfg.engine = args.llm.engine_config();
    cfg.models_dir = args.llm.models_dir.clone();
    cfg.remote_models = args.models_prefix.map(|prefix| maas_sidecar::RemoteModelsConfig {
        prefix,
        cache_dir: args.data_dir.join("models"),
        budget_bytes: args.llm.models_memory_mib << 20,
    });
    cfg.trainers = args.trainers;
    cfg.task_workers = args.training.task_workers;
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let addr = listener.local_addr()?;
    let sidecar = maas_sidecar::Sidecar::start(&stores, Some(listener), cfg).await?;
    tracing::info!(%addr, "sidecar listening");
    tokio::signal::ctrl_c().await?;
    sidecar.stop();
    Ok(())
}
