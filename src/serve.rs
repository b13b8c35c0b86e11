//! The gateway's accept loop. `axum::serve` gives hyper no timer, so hyper's deadline for a
//! request's head never applied, and bodies had none: a client sending a byte a minute held its
//! connection, its task and its share of the body budget for as long as it liked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// Serves `app` over HTTP/1.1 until the task is aborted. `idle` bounds the time to send a
/// request's head and each wait for more of its body; past it the connection is closed, or the
/// body fails to read and is answered as unreadable.
pub async fn serve(listener: TcpListener, app: Router, idle: Duration) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(idle);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait for some to close rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(|body| Body::new(TimeoutBody::new(idle, body)));
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let response = app.clone().oneshot(req);
            async move { Ok::<_, Infallible>(response.await.unwrap_or_else(|e| match e {})) }
        });
        // Upgrades carry the WebSocket chat (`/v1/inference/stream`).
        let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended");
            }
        });
    }
}
