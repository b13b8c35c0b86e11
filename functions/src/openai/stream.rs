//! Running a request's `n` choices on the engine: gathered into one answer, or streamed as
//! Server-Sent Events that end with `data: [DONE]`. Chat and completions differ only in how a
//! chunk looks ([`Chunks`]).

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use maas_sidecar_client::llm::{FinishReason, GenerateEvent, TokenLogprob};
use maas_sidecar_client::EventStream;
use serde_json::{json, Value};

use super::error::OpenAiError;
use crate::inference::Recorded;
use crate::state::AppState;

/// What a completion object and each of its chunks say about themselves.
pub struct Head {
    pub id: String,
    pub created: i64,
    pub model: String,
}

impl Head {
    pub fn new(id_prefix: &str, model: &str) -> Head {
        Head {
            id: super::completion_id(id_prefix),
            created: maas_store::now_secs(),
            model: model.to_string(),
        }
    }

    /// An object of kind `object` with these `choices`.
    pub fn object(&self, object: &str, choices: Value) -> Value {
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "system_fingerprint": null, "choices": choices})
    }
}

/// One choice, gathered.
#[derive(Debug, Default)]
pub struct Gathered {
    pub text: String,
    pub finish_reason: Option<FinishReason>,
    /// Each token's log-probability with its alternatives, when asked for.
    pub logprobs: Vec<(TokenLogprob, Vec<TokenLogprob>)>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Usage {
    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// Reads a choice's stream to its end.
pub async fn gather(mut events: EventStream) -> Result<Gathered, OpenAiError> {
    let mut g = Gathered::default();
    while let Some(event) = events.next().await {
        match event {
            GenerateEvent::Token {
                text,
                logprob,
                top_logprobs,
            } => {
                g.text.push_str(&text);
                if let Some(lp) = logprob {
                    g.logprobs.push((lp, top_logprobs));
                }
            }
            GenerateEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                (g.finish_reason, g.prompt_tokens, g.completion_tokens) =
                    (Some(finish_reason), prompt_tokens, completion_tokens);
                return Ok(g);
            }
            GenerateEvent::Failed { message } => {
                tracing::error!(error = %message, "generation failed");
                return Err(OpenAiError::internal());
            }
        }
    }
    Err(OpenAiError::internal())
}

/// Every choice gathered, in order; the usage counts the prompt once, as OpenAI does.
pub async fn gather_all(streams: Vec<EventStream>) -> Result<(Vec<Gathered>, Usage), OpenAiError> {
    let choices = futures::future::try_join_all(streams.into_iter().map(gather)).await?;
    let usage = Usage {
        prompt_tokens: choices.first().map_or(0, |c| c.prompt_tokens),
        completion_tokens: choices.iter().map(|c| c.completion_tokens).sum(),
    };
    Ok((choices, usage))
}

/// OpenAI's log-probability entry for one token.
pub fn logprob_json(lp: &TokenLogprob, top: &[TokenLogprob]) -> Value {
    let entry = |t: &TokenLogprob| json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes});
    let mut v = entry(lp);
    v["top_logprobs"] = Value::Array(top.iter().map(entry).collect());
    v
}

/// How one surface writes its stream chunks.
pub trait Chunks: Send + Sync + 'static {
    /// A chunk object holding `choices`.
    fn chunk(&self, choices: Value) -> Value;
    /// The chunk that opens choice `index`, if the surface has one (chat's role).
    fn opening(&self, index: u32) -> Option<Value>;
    /// New text for choice `index`.
    fn delta(&self, index: u32, text: &str, logprob: Option<(&TokenLogprob, &[TokenLogprob])>) -> Value;
    /// Choice `index` ended.
    fn finish(&self, index: u32, reason: FinishReason) -> Value;
    /// The last chunk, with the usage, when the caller asked for it: no choices.
    fn usage(&self, usage: Usage) -> Value {
        let mut v = self.chunk(json!([]));
        v["usage"] = usage.json();
        v
    }
}

/// Streams every choice as SSE. Chunks of different choices interleave as they are made.
///
/// The call is recorded before the last chunk goes out, so the stream's end means the call is
/// metered and in the history. That matters in Lambda, where an instance may freeze as soon as
/// its response ends, taking any work left in the background with it.
pub fn sse(
    streams: Vec<EventStream>,
    chunks: impl Chunks,
    include_usage: bool,
    (recorded, state): (Recorded, AppState),
) -> Response {
    let n = streams.len();
    let tagged = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.map(move |e| (i as u32, e)).boxed());
    let mut merged = futures::stream::select_all(tagged);
    let body = async_stream(move |tx| async move {
        let mut usage = Usage::default();
        let mut done = 0;
        for i in 0..n as u32 {
            if let Some(open) = chunks.opening(i) {
                tx.send(open.to_string()).await?;
            }
        }
        while let Some((i, event)) = merged.next().await {
            match event {
                GenerateEvent::Token {
                    text,
                    logprob,
                    top_logprobs,
                } => {
                    if text.is_empty() && logprob.is_none() {
                        continue;
                    }
                    let lp = logprob.as_ref().map(|l| (l, top_logprobs.as_slice()));
                    tx.send(chunks.delta(i, &text, lp).to_string()).await?;
                }
                GenerateEvent::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => {
                    usage.prompt_tokens = prompt_tokens;
                    usage.completion_tokens += completion_tokens;
                    tx.send(chunks.finish(i, finish_reason).to_string()).await?;
                    done += 1;
                    if done == n {
                        break;
                    }
                }
                GenerateEvent::Failed { message } => {
                    tracing::error!(error = %message, "generation failed mid-stream");
                    tx.send(OpenAiError::internal().sse_data()).await?;
                    return Ok(());
                }
            }
        }
        drop(merged);
        recorded.wait(&state).await;
        if include_usage {
            tx.send(chunks.usage(usage).to_string()).await?;
        }
        tx.send("[DONE]".to_string()).await
    });
    Sse::new(body.map(|data| Ok::<_, Infallible>(Event::default().data(data)))).into_response()
}

/// A stream fed by `producer` through a small channel: the producer stops at its next send
/// once the client has gone (the receiver is dropped), which drops the engine streams and
/// cancels the generations.
fn async_stream<F, Fut>(producer: F) -> futures::stream::BoxStream<'static, String>
where
    F: FnOnce(Sender) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Closed>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(16);
    tokio::spawn(async move {
        let _ = producer(Sender(tx)).await;
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|s| (s, rx)) }).boxed()
}

pub struct Sender(tokio::sync::mpsc::Sender<String>);
pub struct Closed;

impl Sender {
    async fn send(&self, data: String) -> Result<(), Closed> {
        self.0.send(data).await.map_err(|_| Closed)
    }
}
