//! Settings shared by the Lambda functions and the local gateway, read from the environment.

use maas_store::StoreConfig;

/// Default request body limit: enough for SGT clients' 1024 x 2048 bodies written with long
/// decimals; Lambda's own 6 MB payload limit applies on top in AWS.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub store: StoreConfig,
    pub sidecar_url: String,
    pub sidecar_secret: String,
    pub system_key: String,
    pub body_limit: usize,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ApiConfig {
    /// The Lambda configuration. Refuses to start without the system key or the sidecar.
    pub fn from_env() -> anyhow::Result<ApiConfig> {
        let required = |name: &str| var(name).ok_or_else(|| anyhow::anyhow!("{name} must be set"));
        let store = match var("MAAS_STORE").as_deref() {
            Some("embedded") => StoreConfig::Embedded {
                dir: var("MAAS_DATA_DIR").unwrap_or_else(|| "./.maas".into()).into(),
            },
            _ => StoreConfig::Aws {
                table: var("MAAS_TABLE").unwrap_or_else(|| "maas".into()),
                bucket: var("MAAS_BUCKET").unwrap_or_else(|| "maas-blobs".into()),
            },
        };
        Ok(ApiConfig {
            store,
            sidecar_url: required("MAAS_SIDECAR_URL")?,
            sidecar_secret: required("MAAS_SIDECAR_SECRET")?,
            system_key: required("MAAS_SYSTEM_KEY")?,
            body_limit: match var("MAAS_BODY_LIMIT") {
                Some(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("MAAS_BODY_LIMIT must be a number of bytes"))?,
                None => DEFAULT_BODY_LIMIT,
            },
        })
    }
}
