//! What every Lambda binary runs: set up tracing, build the clients once, serve one route.

use maas_store::Stores;

use crate::config::ApiConfig;
use crate::routes;
use crate::state::AppState;

pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time() // CloudWatch stamps every line
        .init();
}

/// The whole `main` of the Lambda for route `name`.
pub async fn serve_route(name: &str) -> Result<(), lambda_http::Error> {
    init_tracing();
    let route = routes::find(name).ok_or_else(|| format!("no route named {name}"))?;
    let config = ApiConfig::from_env()?;
    let stores = Stores::open(&config.store).await?;
    let app = routes::router(AppState::new(&stores, &config).await?, [route]);
    match route.streams() {
        // Invoked through a function URL in RESPONSE_STREAM mode (infra/template.yaml).
        true => lambda_http::run_with_streaming_response(app).await,
        false => lambda_http::run(app).await,
    }
}

/// Declares a Lambda binary's `main` for the route named like the binary.
#[macro_export]
macro_rules! lambda_main {
    () => {
        #[tokio::main]
        async fn main() -> Result<(), lambda_http::Error> {
            $crate::lambda::serve_route(env!("CARGO_BIN_NAME")).await
        }
    };
}
