//! The sidecar's HTTP face: `/health` and `/v1/sgt/run`, behind a shared secret and a
//! bounded queue that answers 429 instead of piling up work.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use candle_core::{Device, Tensor};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use maas_sidecar_client::wire::{decode_run, encode_f32, RunHeader};
use maas_sidecar_client::SECRET_HEADER;
use maas_store::Blobs;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::cache::{LoadError, ModelCache};

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
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

pub async fn serve(listener: TcpListener, state: Arc<ServerState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

async fn route(req: Request<Incoming>, state: &ServerState) -> Reply {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/health") => reply(StatusCode::OK, "ok"),
        ("POST", "/v1/sgt/run") => {
            if !authorised(&req, &state.secret) {
                return reply(StatusCode::UNAUTHORIZED, "bad sidecar secret");
            }
            run(req, state).await
        }
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

async fn run(req: Request<Incoming>, state: &ServerState) -> Reply {
    let Ok(_admitted) = state.admitted.clone().try_acquire_owned() else {
        return reply(StatusCode::TOO_MANY_REQUESTS, "queue full");
    };
    let body = match Limited::new(req.into_body(), MAX_RUN_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "run request too large"),
    };
    let (header, rows) = match decode_run(&body) {
        Ok(v) => v,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e),
    };
    let mlp = match state.cache.get(&header.model, state.blobs.as_ref()).await {
        Ok(m) => m,
        Err(LoadError::UnknownType(t)) => return reply(StatusCode::BAD_REQUEST, format!("unknown model type {t}")),
        Err(LoadError::Stale) => return reply(StatusCode::CONFLICT, "checkpoint superseded"),
        Err(LoadError::Failed(e)) => {
            tracing::error!(model_id = %header.model.model_id, error = %e, "cannot load model");
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "cannot load model");
        }
    };
    if mlp.in_size() != header.model.in_size as usize || mlp.out_size() != header.model.out_size as usize {
        return reply(StatusCode::BAD_REQUEST, "model shape does not match");
    }
    let Ok(_slot) = state.compute.acquire().await else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let device = state.device.clone();
    let out = tokio::task::spawn_blocking(move || forward(&mlp, &header, rows, &device)).await;
    match out {
        Ok(Ok(values)) => reply(StatusCode::OK, encode_f32(&values)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "forward failed");
            reply(StatusCode::INTERNAL_SERVER_ERROR, "forward failed")
        }
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "forward panicked"),
    }
}

fn forward(
    mlp: &crate::ensemble::Mlp,
    header: &RunHeader,
    rows: Vec<f32>,
    device: &Device,
) -> candle_core::Result<Vec<f32>> {
    if header.rows == 0 {
        return Ok(Vec::new());
    }
    let x = Tensor::from_vec(rows, (header.rows as usize, header.model.in_size as usize), device)?;
    mlp.forward(&x)?.flatten_all()?.to_vec1()
}
