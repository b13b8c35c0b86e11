use clap::Parser;

fn main() -> anyhow::Result<()> {
    maas_sidecar::block_on(run())?
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    let gateway = maas::Gateway::start(maas::Config::parse()).await?;
    tracing::info!(addr = %gateway.addr, "maas is listening");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
