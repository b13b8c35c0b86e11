//! Settings shared by the Lambda functions and the local gateway, read from the environment.

use maas_sidecar_client::SidecarClient;
use maas_store::StoreConfig;

use crate::v1::limits::{Limit, RateLimits};
use crate::v1::tokens::{SigningKey, TokenKeys};

/// Identity settings, shared by the gateway's flags and the Lambdas' environment (clap reads
/// both), so each is declared once.
#[derive(clap::Args, Clone, Debug)]
pub struct IdentityArgs {
    /// JWT signing keys, `kid=base64url-secret,...`; the first signs, all verify (rotation).
    /// The gateway generates one and keeps it in the data directory when unset.
    #[arg(long, env = "MAAS_JWT_KEYS", hide_env_values = true)]
    pub jwt_keys: Option<String>,
    /// Access-token lifetime in seconds.
    #[arg(long, env = "MAAS_ACCESS_TTL", default_value_t = 900)]
    pub access_ttl: i64,
    /// Sign-up and sign-in requests per IP, COUNT/SECONDS.
    #[arg(long, env = "MAAS_RATE_AUTH", default_value = "30/60")]
    pub rate_auth: Limit,
    #[arg(long, env = "MAAS_RATE_INFERENCE", default_value = "60/60")]
    pub rate_inference: Limit,
    #[arg(long, env = "MAAS_RATE_TRAINING", default_value = "10/3600")]
    pub rate_training: Limit,
    #[arg(long, env = "MAAS_RATE_OTHER", default_value = "120/60")]
    pub rate_other: Limit,
    /// Authenticated requests per IP, whoever sends them.
    #[arg(long, env = "MAAS_RATE_IP", default_value = "1200/60")]
    pub rate_ip: Limit,
    /// API calls per user per calendar month.
    #[arg(long, env = "MAAS_MONTHLY_CALLS", default_value_t = 100_000)]
    pub monthly_calls: i64,
    /// Model tokens (prompt and generated) per user, COUNT/SECONDS: a call that finds the
    /// window used up is refused; the call that crosses it finishes.
    #[arg(long, env = "MAAS_RATE_INFERENCE_TOKENS", default_value = "200000/60")]
    pub rate_inference_tokens: Limit,
    /// Model tokens per user per calendar month.
    #[arg(long, env = "MAAS_MONTHLY_TOKENS", default_value_t = 10_000_000)]
    pub monthly_tokens: i64,
    /// Bytes each user may keep in the bucket: models, datasets.
    #[arg(long, env = "MAAS_STORAGE_BYTES", default_value_t = 10 << 30)]
    pub storage_bytes: i64,
    /// Days an inference call stays in its caller's history.
    #[arg(long, env = "MAAS_HISTORY_DAYS", default_value_t = 30)]
    pub history_days: u32,
    /// The first admin, created at start when missing. There is no default password.
    #[arg(long, env = "MAAS_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,
    #[arg(long, env = "MAAS_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    #[arg(long, env = "MAAS_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// OAuth sign-in providers, a JSON array of
    /// `{"name","client_id","client_secret","token_url","userinfo_url","redirect_uri"?}`.
    #[arg(long, env = "MAAS_OAUTH_PROVIDERS", hide_env_values = true)]
    pub oauth_providers: Option<String>,
}

/// The flags' defaults, without reading the environment.
impl Default for IdentityArgs {
    fn default() -> Self {
        let limits = RateLimits::default();
        IdentityArgs {
            jwt_keys: None,
            access_ttl: 900,
            rate_auth: limits.auth,
            rate_inference: limits.inference,
            rate_training: limits.training,
            rate_other: limits.other,
            rate_ip: limits.ip,
            monthly_calls: limits.monthly_calls,
            rate_inference_tokens: limits.inference_tokens,
            monthly_tokens: limits.monthly_tokens,
            storage_bytes: limits.storage_bytes,
            history_days: 30,
            admin_username: "admin".into(),
            admin_email: None,
            admin_password: None,
            oauth_providers: None,
        }
    }
}

impl IdentityArgs {
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            auth: self.rate_auth,
            inference: self.rate_inference,
            training: self.rate_training,
            other: self.rate_other,
            ip: self.rate_ip,
            monthly_calls: self.monthly_calls,
            inference_tokens: self.rate_inference_tokens,
            monthly_tokens: self.monthly_tokens,
            storage_bytes: self.storage_bytes,
        }
    }

    pub fn token_keys(&self) -> anyhow::Result<TokenKeys> {
        let spec = self
            .jwt_keys
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("MAAS_JWT_KEYS must be set"))?;
        let keys: Vec<SigningKey> = TokenKeys::parse_keys(spec)?;
        anyhow::ensure!(self.access_ttl > 0, "the access-token lifetime must be positive");
        Ok(TokenKeys {
            access_ttl: self.access_ttl,
            ..TokenKeys::new(keys)
        })
    }
}

/// Default request body limit: enough for SGT clients' 1024 x 2048 bodies written with long
/// decimals; Lambda's own 6 MB payload limit applies on top in AWS.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub store: StoreConfig,
    /// Where run requests go: a remote sidecar over HTTP (Lambda), or `maas`'s own.
    pub sidecar: SidecarClient,
    pub system_key: String,
    pub body_limit: usize,
    pub identity: IdentityArgs,
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
            sidecar: SidecarClient::new(&required("MAAS_SIDECAR_URL")?, &required("MAAS_SIDECAR_SECRET")?),
            system_key: required("MAAS_SYSTEM_KEY")?,
            body_limit: match var("MAAS_BODY_LIMIT") {
                Some(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("MAAS_BODY_LIMIT must be a number of bytes"))?,
                None => DEFAULT_BODY_LIMIT,
            },
            identity: <IdentityArgs as clap::FromArgMatches>::from_arg_matches(
                &<IdentityArgs as clap::Args>::augment_args(clap::Command::new("lambda")).get_matches_from(["lambda"]),
            )?,
        })
    }
}
