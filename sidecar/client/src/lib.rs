//! The sidecar's wire types and a typed client. The API functions depend on this crate only,
//! never on candle.

pub mod llm;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

pub use wire::{CheckpointRef, ModelRef, RunHeader, MODEL_TYPES, SECRET_HEADER};

use futures::stream::BoxStream;
use llm::{EmbedRequest, Embeddings, GenerateError, GenerateEvent, GenerateRequest, LlmModelInfo, ModelState};

/// A generation's events, in order, ending with `Done` or `Failed`. Dropping it cancels the
/// generation.
pub type EventStream = BoxStream<'static, GenerateEvent>;

#[derive(Debug, Error)]
pub enum SidecarError {
    /// The sidecar's queue is full; try again later.
    #[error("sidecar busy")]
    Busy,
    /// The checkpoint the caller named was superseded; read the model again and retry.
    #[error("checkpoint superseded")]
    Stale,
    /// The sidecar refused the request as malformed (a bug on our side, never user input).
    #[error("sidecar rejected the request: {0}")]
    Rejected(String),
    /// The sidecar could not be reached or failed.
    #[error("sidecar unavailable: {0}")]
    Unavailable(String),
}

/// The sidecar's run operation as a Rust call. `maas` embeds its sidecar and calls it through
/// this, skipping the loopback HTTP hop (the request's rows encoded, sent, read and decoded
/// again, on the same two cores); a Lambda function reaches a remote sidecar over HTTP.
#[async_trait::async_trait]
pub trait Compute: Send + Sync + 'static {
    async fn run(&self, model: &ModelRef, rows: &[f32]) -> Result<Vec<f32>, SidecarError>;
    /// Starts a generation on a language model.
    async fn generate(&self, req: GenerateRequest) -> Result<EventStream, GenerateError>;
    /// The language and embedding models ready to serve.
    async fn llm_models(&self) -> Result<Vec<LlmModelInfo>, SidecarError>;
    /// Embeds texts with an embedding model.
    async fn embed(&self, req: EmbedRequest) -> Result<Embeddings, GenerateError>;
    /// Where model `id` stands, starting to load it from the bucket if need be; `None` when
    /// the sidecar cannot find it.
    async fn load_model(&self, id: &str) -> Result<Option<ModelState>, SidecarError>;
    /// Counts the tokens of texts as a language model reads them.
    async fn count_tokens(&self, req: llm::TokenCountRequest) -> Result<llm::TokenCounts, GenerateError>;
}

/// A client for one sidecar, cheap to clone.
#[derive(Clone)]
pub struct SidecarClient {
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Http(HttpSidecar),
    InProcess(Arc<dyn Compute>),
}

#[derive(Clone)]
struct HttpSidecar {
    base: String,
    secret: String,
    http: reqwest::Client,
}

/// Names the transport and address, never the secret.
impl std::fmt::Debug for SidecarClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Http(h) => write!(f, "SidecarClient(http {})", h.base),
            Transport::InProcess(_) => write!(f, "SidecarClient(in process)"),
        }
    }
}

impl SidecarClient {
    /// A sidecar reached over HTTP at `base_url`, presenting `secret`.
    pub fn new(base_url: &str, secret: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .expect("reqwest client builds");
        let http = HttpSidecar {
            base: base_url.trim_end_matches('/').to_string(),
            secret: secret.to_string(),
            http,
        };
        SidecarClient {
            transport: Transport::Http(http),
        }
    }

    /// A sidecar running in this process.
    pub fn in_process(compute: Arc<dyn Compute>) -> Self {
        SidecarClient {
            transport: Transport::InProcess(compute),
        }
    }

    pub async fn health(&self) -> Result<(), SidecarError> {
        match &self.transport {
            Transport::Http(h) => h.health().await,
            Transport::InProcess(_) => Ok(()),
        }
    }

    /// Runs `rows` (row-major, `model.in_size` values each) through the model; returns
    /// row-major outputs, `model.out_size` values each.
    pub async fn run(&self, model: &ModelRef, rows: &[f32]) -> Result<Vec<f32>, SidecarError> {
        match &self.transport {
            Transport::Http(h) => h.run(model, rows).await,
            Transport::InProcess(c) => c.run(model, rows).await,
        }
    }
}

impl SidecarClient {
    /// Starts a generation; see [`Compute::generate`].
    pub async fn generate(&self, req: GenerateRequest) -> Result<EventStream, GenerateError> {
        match &self.transport {
            Transport::Http(h) => h.generate(req).await,
            Transport::InProcess(c) => c.generate(req).await,
        }
    }

    pub async fn llm_models(&self) -> Result<Vec<LlmModelInfo>, SidecarError> {
        match &self.transport {
            Transport::Http(h) => h.llm_models().await,
            Transport::InProcess(c) => c.llm_models().await,
        }
    }

    /// See [`Compute::load_model`].
    pub async fn load_model(&self, id: &str) -> Result<Option<ModelState>, SidecarError> {
        match &self.transport {
            Transport::Http(h) => h.load_model(id).await,
            Transport::InProcess(c) => c.load_model(id).await,
        }
    }

    /// See [`Compute::count_tokens`].
    pub async fn count_tokens(&self, req: llm::TokenCountRequest) -> Result<llm::TokenCounts, GenerateError> {
        match &self.transport {
            Transport::Http(h) => h.count_tokens(req).await,
            Transport::InProcess(c) => c.count_tokens(req).await,
        }
    }

    /// Embeds texts; see [`Compute::embed`].
    pub async fn embed(&self, req: EmbedRequest) -> Result<Embeddings, GenerateError> {
        match &self.transport {
            Transport::Http(h) => h.embed(req).await,
            Transport::InProcess(c) => c.embed(req).await,
        }
    }
}

impl HttpSidecar {
    /// `POST /v1/llm/generate`: JSON in, one JSON event a line out, as they happen. A refusal
    /// is a non-200 answer whose body is the [`GenerateError`].
    async fn generate(&self, req: GenerateRequest) -> Result<EventStream, GenerateError> {
        let res = self
            .http
            .post(format!("{}/v1/llm/generate", self.base))
            .header(SECRET_HEADER, &self.secret)
            .json(&req)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(sidecar_down)?;
        let res = refusal(res).await?;
        Ok(wire::event_lines(res.bytes_stream()))
    }

    /// `POST /v1/llm/embed`: JSON in, JSON out; a refusal as for `generate`.
    async fn embed(&self, req: EmbedRequest) -> Result<Embeddings, GenerateError> {
        self.post_refusable("/v1/llm/embed", &req, "embeddings").await
    }

    /// POSTs `req` as JSON to `path` and reads the JSON answer (`what` names it in errors); a
    /// refusal comes back as the [`GenerateError`] the sidecar sent.
    async fn post_refusable<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &impl serde::Serialize,
        what: &str,
    ) -> Result<T, GenerateError> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header(SECRET_HEADER, &self.secret)
            .json(req)
            .send()
            .await
            .map_err(sidecar_down)?;
        let body = refusal(res).await?.bytes().await.map_err(sidecar_down)?;
        serde_json::from_slice(&body).map_err(|e| GenerateError::Internal {
            message: format!("sidecar answered garbled {what}: {e}"),
        })
    }

    async fn llm_models(&self) -> Result<Vec<LlmModelInfo>, SidecarError> {
        let res = self
            .http
            .get(format!("{}/v1/llm/models", self.base))
            .header(SECRET_HEADER, &self.secret)
            .send()
            .await
            .map_err(unavailable)?;
        let body = check(res).await?;
        serde_json::from_slice(&body).map_err(|e| SidecarError::Unavailable(e.to_string()))
    }

    /// `POST /v1/llm/tokens`: the counts, or the refusal as a [`GenerateError`].
    async fn count_tokens(&self, req: llm::TokenCountRequest) -> Result<llm::TokenCounts, GenerateError> {
        self.post_refusable("/v1/llm/tokens", &req, "token counts").await
    }

    /// `POST /v1/llm/models/load` with `{"id"}`: the model's state, or 404.
    async fn load_model(&self, id: &str) -> Result<Option<ModelState>, SidecarError> {
        let res = self
            .http
            .post(format!("{}/v1/llm/models/load", self.base))
            .header(SECRET_HEADER, &self.secret)
            .json(&serde_json::json!({"id": id}))
            .send()
            .await
            .map_err(unavailable)?;
        if res.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = check(res).await?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| SidecarError::Unavailable(e.to_string()))
    }

    async fn health(&self) -> Result<(), SidecarError> {
        let res = self
            .http
            .get(format!("{}/health", self.base))
            .send()
            .await
            .map_err(unavailable)?;
        check(res).await.map(drop)
    }

    async fn run(&self, model: &ModelRef, rows: &[f32]) -> Result<Vec<f32>, SidecarError> {
        let n_rows = rows.len() / model.in_size.max(1) as usize;
        let body = wire::encode_run(
            &RunHeader {
                model: model.clone(),
                rows: n_rows as u32,
            },
            rows,
        );
        let res = self
            .http
            .post(format!("{}/v1/sgt/run", self.base))
            .header(SECRET_HEADER, &self.secret)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(unavailable)?;
        let bytes = check(res).await?;
        wire::decode_f32(&bytes).map_err(SidecarError::Unavailable)
    }
}

fn sidecar_down(e: reqwest::Error) -> GenerateError {
    GenerateError::Internal {
        message: format!("sidecar unavailable: {e}"),
    }
}

/// A generate or embed answer that is not 200 carries the [`GenerateError`] as JSON.
async fn refusal(res: reqwest::Response) -> Result<reqwest::Response, GenerateError> {
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status();
    let body = res.bytes().await.map_err(sidecar_down)?;
    Err(serde_json::from_slice(&body).unwrap_or(GenerateError::Internal {
        message: format!("sidecar answered {status}"),
    }))
}

fn unavailable(e: reqwest::Error) -> SidecarError {
    SidecarError::Unavailable(e.to_string())
}

async fn check(res: reqwest::Response) -> Result<bytes::Bytes, SidecarError> {
    let status = res.status();
    let body = res.bytes().await.map_err(unavailable)?;
    match status.as_u16() {
        200 => Ok(body),
        429 | 503 => Err(SidecarError::Busy),
        409 => Err(SidecarError::Stale),
        400 | 401 | 404 | 413 => Err(SidecarError::Rejected(String::from_utf8_lossy(&body).into_owned())),
        _ => Err(SidecarError::Unavailable(format!("status {status}"))),
    }
}
