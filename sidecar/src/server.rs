//! The sidecar's run path, behind a bounded queue that answers "busy" instead of piling up
//! work, and its language models: its HTTP face (`/health`, `/v1/sgt/run`, `/v1/llm/generate`
//! and `/v1/llm/models`, behind a shared secret) and the same paths as Rust calls
//! ([`Compute`]) for `maas`, which embeds the sidecar.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use candle_core::{Device, Tensor};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use maas_sidecar_client::llm::{
    EmbedRequest, Embeddings, GenerateError, GenerateRequest, LlmModelInfo, ModelState, TokenCountRequest, TokenCounts,
};
use maas_sidecar_client::wire::{decode_run, encode_f32, event_line};
use maas_sidecar_client::{Compute, EventStream, ModelRef, SidecarError, SECRET_HEADER};
use maas_store::Blobs;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::cache::{LoadError, ModelCache};
use crate::llm::service::LlmService;

/// Largest run request accepted: 4096 rows of 4096 inputs, plus header.
pub const MAX_RUN_BYTES: usize = 4096 * 4096 * 4 + 64 * 1024;

pub struct ServerState {
    pub secret: String,
    pub cache: Arc<ModelCache>,
    pub blobs: Arc<dyn Blobs>,
    pub device: Device,
    /// Requests admitted (queued or running); beyond this the answer is 429.
    pub admitted: Arc<Semaphore>,
    /// Requests computing at once.
    pub compute: Arc<Semaphore>,
    /// The language models this sidecar serves.
    pub llm: Arc<LlmService>,
}

type Reply = Response<UnsyncBoxBody<Bytes, Infallible>>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r
}

/// Largest generate request: a prompt or conversation of a few megabytes.
const MAX_GENERATE_BYTES: usize = 8 << 20;
/// An embed request: up to 2,048 inputs, within the API's own body limit.
const MAX_EMBED_BYTES: usize = 8 << 20;

/// Serves the sidecar's routes. Heads must arrive within `head_timeout`: the secret is checked
/// only once a head is whole, so without a deadline anyone who can reach the port could hold
/// connections open by sending a byte a minute.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, head_timeout: Duration) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(head_timeout);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait for some to close rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let svc = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(req, &state).await) }
        });
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

async fn route(req: Request<Incoming>, state: &ServerState) -> Reply {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/health") => reply(StatusCode::OK, "ok"),
        _ if !authorised(&req, &state.secret) => reply(StatusCode::UNAUTHORIZED, "bad sidecar secret"),
        ("POST", "/v1/sgt/run") => run(req, state).await,
        ("POST", "/v1/llm/generate") => generate(req, state).await,
        ("POST", "/v1/llm/embed") => embed(req, state).await,
        ("POST", "/v1/llm/tokens") => count_tokens(req, state).await,
        ("POST", "/v1/llm/models/load") => load_model(req, state).await,
        ("GET", "/v1/llm/models") => match serde_json::to_vec(&state.llm.models()) {
            Ok(body) => reply(StatusCode::OK, body),
            Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "cannot list models"),
        },
        _ => reply(StatusCode::NOT_FOUND, "no such route"),
    }
}

fn authorised(req: &Request<Incoming>, secret: &str) -> bool {
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    given.ct_eq(secret.as_bytes()).into()
}

/// Why a run produced no outputs. The HTTP face and in-process callers each map it once.
#[derive(Debug)]
pub enum RunError {
    /// The queue is full.
    Busy,
    /// The caller named a superseded checkpoint.
    Stale,
    /// The request does not fit the model (a caller bug, never user input).
    Rejected(String),
    /// The sidecar was stopped ([`crate::Sidecar::stop`] closes the compute slots): 503 over
    /// HTTP, so the caller retries elsewhere.
    ShuttingDown,
    /// The model could not be loaded or run; details are logged, not returned.
    Failed(&'static str),
}

impl RunError {
    fn reply(self) -> Reply {
        match self {
            RunError::Busy => reply(StatusCode::TOO_MANY_REQUESTS, "queue full"),
            RunError::Stale => reply(StatusCode::CONFLICT, "checkpoint superseded"),
            RunError::Rejected(m) => reply(StatusCode::BAD_REQUEST, m),
            RunError::ShuttingDown => reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            RunError::Failed(m) => reply(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

impl From<RunError> for SidecarError {
    fn from(e: RunError) -> Self {
        match e {
            // Over HTTP the client reads 503 as busy too: another sidecar may take the retry.
            RunError::Busy | RunError::ShuttingDown => SidecarError::Busy,
            RunError::Stale => SidecarError::Stale,
            RunError::Rejected(m) => SidecarError::Rejected(m),
            RunError::Failed(m) => SidecarError::Unavailable(m.into()),
        }
    }
}

async fn run(req: Request<Incoming>, state: &ServerState) -> Reply {
    let Ok(_admitted) = state.admitted.clone().try_acquire_owned() else {
        return RunError::Busy.reply();
    };
    let body = match Limited::new(req.into_body(), MAX_RUN_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "run request too large"),
    };
    let (header, rows) = match decode_run(&body) {
        Ok(v) => v,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e),
    };
    match state.run_admitted(&header.model, header.rows as usize, rows).await {
        Ok(values) => reply(StatusCode::OK, encode_f32(&values)),
        Err(e) => e.reply(),
    }
}

/// Streams a generation as one JSON event a line; a refusal is answered with its status and
/// the [`GenerateError`] as JSON. The client going away drops the stream, which cancels the
/// generation within a step.
async fn generate(req: Request<Incoming>, state: &ServerState) -> Reply {
    let body = match Limited::new(req.into_body(), MAX_GENERATE_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "generate request too large"),
    };
    let request: GenerateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.generate(request).await {
        Ok(events) => {
            use futures::StreamExt;
            let frames = events.map(|e| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(event_line(&e)))));
            let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/x-ndjson"),
            );
            r
        }
        Err(e) => refused(&e),
    }
}

/// Embeds a JSON [`EmbedRequest`]; answers the [`Embeddings`], or a refusal as `generate` does.
async fn embed(req: Request<Incoming>, state: &ServerState) -> Reply {
    let body = match Limited::new(req.into_body(), MAX_EMBED_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "embed request too large"),
    };
    let request: EmbedRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.embed(request).await {
        Ok(e) => reply(StatusCode::OK, serde_json::to_vec(&e).unwrap_or_default()),
        Err(e) => refused(&e),
    }
}

async fn count_tokens(req: Request<Incoming>, state: &ServerState) -> Reply {
    let body = match Limited::new(req.into_body(), MAX_EMBED_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "token count request too large"),
    };
    let request: TokenCountRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.count_tokens(request).await {
        Ok(c) => reply(StatusCode::OK, serde_json::to_vec(&c).unwrap_or_default()),
        Err(e) => refused(&e),
    }
}

/// A refusal's status, with the [`GenerateError`] as JSON for the client to rebuild.
fn refused(e: &GenerateError) -> Reply {
    let status = match e {
        GenerateError::UnknownModel { .. } => StatusCode::NOT_FOUND,
        GenerateError::Loading => StatusCode::SERVICE_UNAVAILABLE,
        GenerateError::QueueFull => StatusCode::TOO_MANY_REQUESTS,
        GenerateError::ContextTooLong { .. } | GenerateError::BadPrompt { .. } => StatusCode::BAD_REQUEST,
        GenerateError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    reply(status, serde_json::to_vec(e).unwrap_or_default())
}

/// `maas`'s in-process calls: the same queue, cache and compute slots as HTTP requests.
#[async_trait::async_trait]
impl Compute for ServerState {
    async fn run(&self, model: &ModelRef, rows: &[f32]) -> Result<Vec<f32>, SidecarError> {
        let Ok(_admitted) = self.admitted.try_acquire() else {
            return Err(SidecarError::Busy);
        };
        let width = (model.in_size as usize).max(1);
        if !rows.len().is_multiple_of(width) {
            return Err(SidecarError::Rejected(
                "rows do not match the model's input size".into(),
            ));
        }
        Ok(self.run_admitted(model, rows.len() / width, rows.to_vec()).await?)
    }

    async fn generate(&self, req: GenerateRequest) -> Result<EventStream, GenerateError> {
        use futures::StreamExt;
        let mut rx = self.llm.generate(req)?;
        Ok(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
    }

    async fn llm_models(&self) -> Result<Vec<LlmModelInfo>, SidecarError> {
        Ok(self.llm.models())
    }

    async fn embed(&self, req: EmbedRequest) -> Result<Embeddings, GenerateError> {
        self.llm.embed_all(req).await
    }

    async fn count_tokens(&self, req: TokenCountRequest) -> Result<TokenCounts, GenerateError> {
        let llm = self.llm.clone();
        tokio::task::spawn_blocking(move || llm.count_tokens(&req.model, &req.texts))
            .await
            .map_err(|e| GenerateError::Internal { message: e.to_string() })?
    }

    async fn load_model(&self, id: &str) -> Result<Option<ModelState>, SidecarError> {
        self.llm.find(id).await.map_err(|e| {
            tracing::error!(model = %id, error = %e, "cannot look for a model");
            SidecarError::Unavailable("cannot look for the model".into())
        })
    }
}

/// `{"id"}` in; the model's state out, or 404 when no one has it.
async fn load_model(req: Request<Incoming>, state: &ServerState) -> Reply {
    #[derive(serde::Deserialize)]
    struct Load {
        id: String,
    }
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, "cannot read the body");
    };
    let Ok(load) = serde_json::from_slice::<Load>(&body) else {
        return reply(StatusCode::BAD_REQUEST, "expected {\"id\"}");
    };
    match state.load_model(&load.id).await {
        Ok(Some(s)) => reply(StatusCode::OK, serde_json::to_vec(&s).unwrap_or_default()),
        Ok(None) => reply(StatusCode::NOT_FOUND, "no such model"),
        Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "cannot look for the model"),
    }
}

impl ServerState {
    /// Loads the model (cached) and runs `rows` through it on a compute slot.
    async fn run_admitted(&self, model: &ModelRef, n_rows: usize, rows: Vec<f32>) -> Result<Vec<f32>, RunError> {
        let mlp = match self.cache.get(model, self.blobs.as_ref()).await {
            Ok(m) => m,
            Err(LoadError::UnknownType(t)) => return Err(RunError::Rejected(format!("unknown model type {t}"))),
            Err(LoadError::Stale) => return Err(RunError::Stale),
            Err(LoadError::Failed(e)) => {
                tracing::error!(model_id = %model.model_id, error = %e, "cannot load model");
                return Err(RunError::Failed("cannot load model"));
            }
        };
        if mlp.in_size() != model.in_size as usize || mlp.out_size() != model.out_size as usize {
            return Err(RunError::Rejected("model shape does not match".into()));
        }
        let Ok(_slot) = self.compute.acquire().await else {
            return Err(RunError::ShuttingDown);
        };
        let device = self.device.clone();
        let in_size = model.in_size as usize;
        let result = if n_rows.saturating_mul(mlp.macs_per_row()) <= INLINE_MACS {
            std::panic::catch_unwind(AssertUnwindSafe(|| forward(&mlp, n_rows, in_size, rows, &device))).map_err(drop)
        } else {
            tokio::task::spawn_blocking(move || forward(&mlp, n_rows, in_size, rows, &device))
                .await
                .map_err(drop)
        };
        match result {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "forward failed");
                Err(RunError::Failed("forward failed"))
            }
            Err(()) => Err(RunError::Failed("forward panicked")),
        }
    }
}

/// Forward passes up to this many multiply-adds (about 0.2 ms of CPU; 1024 rows of a 64-wide
/// model are 7 M) run on the calling task: handing them to a blocking thread and back cost two
/// thread wake-ups, a sizeable share of such a request. Bigger ones leave the async threads free.
const INLINE_MACS: usize = 8_000_000;

fn forward(
    mlp: &crate::ensemble::Mlp,
    n_rows: usize,
    in_size: usize,
    rows: Vec<f32>,
    device: &Device,
) -> candle_core::Result<Vec<f32>> {
    if n_rows == 0 {
        return Ok(Vec::new());
    }
    let x = Tensor::from_vec(rows, (n_rows, in_size), device)?;
    mlp.forward(&x)?.flatten_all()?.to_vec1()
}
