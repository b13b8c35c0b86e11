//! Streaming chat over WebSocket (seed 003 §10.2), at `/v1/inference/stream` (the seed's path)
//! and `/api/v1/inference/stream`. Served by `maas` itself: AWS's HTTP API cannot carry a
//! WebSocket, so there is no Lambda function for it.
//!
//! The protocol, one JSON object per text message:
//! - credentials: an `Authorization: Bearer` (token or API key) or `X-API-Key` header on the
//!   upgrade, or a first message `{"type": "auth", "token": "Bearer ..."}` (browsers cannot set
//!   headers on a WebSocket);
//! - `{"type": "chat", "id"?, "deployment_id" | "model", "messages", "parameters"?}` asks;
//!   the answer is `{"type": "delta", "id", "content"}` messages, then
//!   `{"type": "done", "id", "finish_reason", "usage"}`;
//! - anything wrong is `{"type": "error", "id"?, "error": {code, message, details}}`, and the
//!   connection stays open, except for failed credentials, which close it.
//!
//! Each chat counts against the `inference` rate limit and the token meter, as an HTTP call
//! does. Requests on one connection run one after another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use maas_sidecar_client::llm::{GenerateEvent, Prompt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::envelope::{ApiError, Code};
use super::guard::{authenticate, Principal};
use super::inference::{deployment_target, messages, params_of, Job, MessageIn, Target};
use super::limits::{self, Class, Subject};
use super::params::Parameters;
use crate::state::AppState;

/// Open connections a user may hold (seed 003 §12.2).
pub const MAX_CONNECTIONS: usize = 100;
/// The largest message a client may send.
const MAX_MESSAGE: usize = 1 << 20;

/// Connections per user, in this process.
#[derive(Default)]
pub struct Connections(Mutex<HashMap<String, usize>>);

/// A user's place among [`Connections`], given back when the connection ends.
struct Held(Arc<Connections>, String);

impl Connections {
    fn hold(self: &Arc<Self>, user: &str) -> Option<Held> {
        let mut open = self.0.lock().expect("connections lock");
        let n = open.entry(user.to_string()).or_default();
        if *n >= MAX_CONNECTIONS {
            return None;
        }
        *n += 1;
        Some(Held(self.clone(), user.to_string()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.0 .0.lock().expect("connections lock");
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Auth {
        token: String,
    },
    Chat {
        id: Option<String>,
        deployment_id: Option<String>,
        model: Option<String>,
        messages: Vec<MessageIn>,
        #[serde(default)]
        parameters: Parameters,
    },
}

/// The upgrade. Credentials in the headers are checked now; without them, the first message
/// must carry them.
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    request: axum::extract::Request,
) -> Response {
    let Ok(ws) = ws else {
        let mut e = ApiError::new(Code::Validation002, "this path takes a WebSocket upgrade");
        e.status = Some(axum::http::StatusCode::UPGRADE_REQUIRED);
        return e.into_response();
    };
    let ip = crate::http::client_ip(request.extensions());
    let principal = match authenticate(&state, &headers, &ip).await {
        Ok(p) => Some(p),
        Err(e) if e.code == Code::Auth001 && !has_credentials(&headers) => None,
        Err(e) => return e.into_response(),
    };
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(socket, state, principal, ip))
}

fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key("authorization") || headers.contains_key("x-api-key")
}

async fn send(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(Message::Text(Utf8Bytes::from(value.to_string())))
        .await
        .is_ok()
}

fn error_json(id: Option<&str>, e: &ApiError) -> Value {
    json!({"type": "error", "id": id, "error": e})
}

async fn session(mut socket: WebSocket, state: AppState, principal: Option<Principal>, ip: String) {
    let principal = match principal {
        Some(p) => p,
        None => match first_auth(&mut socket, &state, &ip).await {
            Some(p) => p,
            None => return,
        },
    };
    if let Err(e) = principal.require("inference:create") {
        send(&mut socket, error_json(None, &e)).await;
        return;
    }
    let Some(_held) = state.ws_connections.hold(&principal.user.user_id) else {
        let e = ApiError::new(
            Code::TooManyRequests,
            format!("at most {MAX_CONNECTIONS} open connections per user"),
        );
        send(&mut socket, error_json(None, &e)).await;
        return;
    };
    if !send(&mut socket, json!({"type": "ready", "user_id": principal.user.user_id})).await {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let text = match message {
            Message::Text(t) => t,
            Message::Close(_) => return,
            Message::Binary(_) => {
                let e = ApiError::new(Code::Validation002, "messages are JSON text");
                send(&mut socket, error_json(None, &e)).await;
                continue;
            }
            _ => continue,
        };
        if !answer(&mut socket, &state, &principal, &ip, text.as_str()).await {
            return;
        }
    }
}

/// Waits for `{"type": "auth"}`; on failure says why and closes.
async fn first_auth(socket: &mut WebSocket, state: &AppState, ip: &str) -> Option<Principal> {
    let refused = ApiError::new(
        Code::Auth001,
        "send {\"type\": \"auth\", \"token\": \"Bearer ...\"} first",
    );
    let Some(Ok(Message::Text(text))) = socket.recv().await else {
        return None;
    };
    let token = match serde_json::from_str::<ClientMessage>(text.as_str()) {
        Ok(ClientMessage::Auth { token }) => token,
        _ => {
            send(socket, error_json(None, &refused)).await;
            return None;
        }
    };
    let mut headers = HeaderMap::new();
    let bearer = if token.starts_with("Bearer ") {
        token
    } else {
        format!("Bearer {token}")
    };
    match bearer.parse() {
        Ok(v) => drop(headers.insert("authorization", v)),
        Err(_) => {
            send(socket, error_json(None, &refused)).await;
            return None;
        }
    }
    match authenticate(state, &headers, ip).await {
        Ok(p) => Some(p),
        Err(e) => {
            send(socket, error_json(None, &e)).await;
            None
        }
    }
}

/// Runs one client message; `false` once the client has gone.
async fn answer(socket: &mut WebSocket, state: &AppState, who: &Principal, ip: &str, text: &str) -> bool {
    let (id, job) = match read_chat(state, who, ip, text).await {
        Ok(x) => x,
        Err((id, e)) => return send(socket, error_json(id.as_deref(), &e)).await,
    };
    let (streams, recorded) = match job.start(state, who).await {
        Ok(s) => s,
        Err(e) => return send(socket, error_json(id.as_deref(), &e)).await,
    };
    let events = streams.into_iter().next().expect("one choice");
    let open = relay(socket, id.as_deref(), events).await;
    // The stream is gone: the call is recorded before the next message is read.
    recorded.wait(state).await;
    open
}

/// Sends a choice's events as `delta` messages and a `done` (or `error`); `false` once the
/// client has gone, which drops the stream and so cancels the generation.
async fn relay(socket: &mut WebSocket, id: Option<&str>, mut events: maas_sidecar_client::EventStream) -> bool {
    while let Some(event) = events.next().await {
        let sent = match event {
            GenerateEvent::Token { text, .. } if text.is_empty() => true,
            GenerateEvent::Token { text, .. } => {
                send(socket, json!({"type": "delta", "id": id, "content": text})).await
            }
            GenerateEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
                return send(
                    socket,
                    json!({"type": "done", "id": id, "finish_reason": finish_reason.as_str(), "usage": usage}),
                )
                .await;
            }
            GenerateEvent::Failed { .. } => {
                let e = ApiError::new(Code::Internal, "the model failed while answering");
                return send(socket, error_json(id, &e)).await;
            }
        };
        if !sent {
            return false;
        }
    }
    true
}

type Refusal = (Option<String>, ApiError);

/// Reads and checks a chat message, and counts it against the caller's limits.
async fn read_chat(state: &AppState, who: &Principal, ip: &str, text: &str) -> Result<(Option<String>, Job), Refusal> {
    let message: ClientMessage = super::envelope::parse_json(text.as_bytes()).map_err(|e| (None, e))?;
    let ClientMessage::Chat {
        id,
        deployment_id,
        model,
        messages: list,
        parameters,
    } = message
    else {
        return Err((None, ApiError::new(Code::Validation003, "already authenticated")));
    };
    let fail = |e: ApiError| (id.clone(), e);
    let subject = Subject {
        user_id: Some(&who.user.user_id),
        key_id: who.key_id(),
        ip,
    };
    let verdict = limits::check(&state.v1.repo, &state.v1.limits, Class::Inference, subject)
        .await
        .map_err(|e| fail(e.into()))?;
    if let Some(e) = verdict.error() {
        return Err(fail(e));
    }
    let list = messages(&list, "messages").map_err(fail)?;
    let target = match (deployment_id, model) {
        (Some(d), None) => deployment_target(state, who, &d).await.map_err(fail)?,
        (None, Some(m)) => Target::model(m),
        _ => {
            let e = ApiError::field(
                Code::Validation001,
                "deployment_id",
                "give exactly one of deployment_id and model",
            );
            return Err(fail(e));
        }
    };
    let (params, _) = params_of(&target, &parameters).map_err(fail)?;
    Ok((id.clone(), Job::chat(target, Prompt::Chat(list), params)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_the_connection_limit_and_a_closed_one_frees_its_place() {
        let open = Arc::new(Connections::default());
        let mut held: Vec<Held> = (0..MAX_CONNECTIONS).map(|_| open.hold("u").unwrap()).collect();
        assert!(open.hold("u").is_none());
        assert!(open.hold("v").is_some(), "another user has places of their own");
        held.pop();
        assert!(open.hold("u").is_some());
        drop(held);
        assert!(
            !open.0.lock().unwrap().contains_key("u"),
            "no count stays behind for a user with none open"
        );
    }
}
