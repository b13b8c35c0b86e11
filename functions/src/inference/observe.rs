//! Every inference call is observed once, whatever surface it came through: when its streams
//! end (or the client leaves), its tokens are metered, its deployment's counters grow, and it
//! joins the caller's history.
//!
//! A whole answer is recorded before it is sent ([`Recorded::wait`]): a Lambda function is
//! frozen once it has answered, so work left in the background might never run. A streamed
//! answer is recorded when its streams are dropped, in the task that served them.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use maas_sidecar_client::llm::GenerateEvent;
use maas_sidecar_client::EventStream;
use maas_store::records::inference::HistoryEntry;

use super::metrics;
use crate::state::AppState;

/// The start of a prompt or answer kept in history.
const KEPT_CHARS: usize = 500;

/// What a call is, known before it runs.
#[derive(Clone, Debug)]
pub struct Call {
    pub owner: String,
    /// `chat`, `completion`, `embedding`, `generate`, ...
    pub kind: &'static str,
    pub model: String,
    pub deployment_id: Option<String>,
    /// The prompt, as text (cut when kept).
    pub prompt: String,
}

/// How a call ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
    /// Time to the first token; generation calls only.
    pub ttft_ms: Option<u64>,
    /// The start of the (first) answer.
    pub output: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl Outcome {
    /// A call the engine refused, in words the caller may read.
    pub fn refused(e: &maas_sidecar_client::llm::GenerateError) -> Outcome {
        let error = match e {
            maas_sidecar_client::llm::GenerateError::Internal { .. } => "internal error".to_string(),
            other => other.to_string(),
        };
        Outcome {
            error: Some(error),
            ..Outcome::default()
        }
    }
}

impl Call {
    /// Watches the call's streams (`per_prompt` choices for each prompt, in order). Once all
    /// of them are done or dropped, the call is recorded: by [`Recorded::wait`] when the caller
    /// waits for it, otherwise in the background.
    pub fn observe(
        self,
        state: &AppState,
        streams: Vec<EventStream>,
        per_prompt: usize,
    ) -> (Vec<EventStream>, Recorded) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tally = Arc::new(Tally {
            call: self.clone(),
            state: state.clone(),
            started: Instant::now(),
            seen: Mutex::new(Seen::default()),
            choices: streams.len(),
            per_prompt: per_prompt.max(1),
            waiting: Some(tx),
        });
        let streams = streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let tally = tally.clone();
                s.inspect(move |e| tally.see(i, e)).boxed()
            })
            .collect();
        (
            streams,
            Recorded {
                call: self,
                outcome: rx,
            },
        )
    }

    /// Records a call that ended without streams: refused, or an embedding.
    pub async fn finish(self, state: &AppState, outcome: Outcome) {
        record(state, &self, &outcome).await
    }
}

/// A call whose streams are out: [`Recorded::wait`] records it once they are all dropped.
/// Dropping this instead leaves the recording to the background.
pub struct Recorded {
    call: Call,
    outcome: tokio::sync::oneshot::Receiver<Outcome>,
}

impl Recorded {
    /// Waits for the call's streams to be dropped (the caller drops them first), then records.
    pub async fn wait(self, state: &AppState) {
        if let Ok(outcome) = self.outcome.await {
            record(state, &self.call, &outcome).await
        }
    }
}

#[derive(Default)]
struct Seen {
    done: usize,
    prompt_tokens: u64,
    completion_tokens: u64,
    ttft_ms: Option<f64>,
    output: String,
    error: Option<String>,
}

struct Tally {
    call: Call,
    state: AppState,
    started: Instant,
    seen: Mutex<Seen>,
    choices: usize,
    per_prompt: usize,
    /// Where a caller waits for the outcome, if one does.
    waiting: Option<tokio::sync::oneshot::Sender<Outcome>>,
}

impl Tally {
    fn see(&self, choice: usize, event: &GenerateEvent) {
        let mut seen = self.seen.lock().expect("tally lock");
        match event {
            GenerateEvent::Token { text, .. } if choice == 0 && seen.output.len() < KEPT_CHARS => {
                seen.output.push_str(text);
            }
            GenerateEvent::Token { .. } => {}
            GenerateEvent::Done {
                prompt_tokens,
                completion_tokens,
                time_to_first_token_ms,
                ..
            } => {
                seen.done += 1;
                // A prompt's choices share its tokens: count them once.
                if choice.is_multiple_of(self.per_prompt) {
                    seen.prompt_tokens += *prompt_tokens as u64;
                }
                seen.completion_tokens += *completion_tokens as u64;
                seen.ttft_ms = Some(
                    seen.ttft_ms
                        .map_or(*time_to_first_token_ms, |t| t.min(*time_to_first_token_ms)),
                );
            }
            // The engine's own words stay in the log; the caller's history says only this.
            GenerateEvent::Failed { .. } => seen.error = Some("the model failed while answering".into()),
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let seen = std::mem::take(&mut *self.seen.lock().expect("tally lock"));
        let error = match (seen.error, seen.done == self.choices) {
            (Some(e), _) => Some(e),
            (None, true) => None,
            (None, false) => Some("the client left before the answer was complete".into()),
        };
        let outcome = Outcome {
            prompt_tokens: seen.prompt_tokens,
            completion_tokens: seen.completion_tokens,
            latency_ms: self.started.elapsed().as_millis() as u64,
            ttft_ms: seen.ttft_ms.map(|t| t as u64),
            output: seen.output,
            error,
        };
        let outcome = match self.waiting.take() {
            Some(tx) => match tx.send(outcome) {
                Ok(()) => return,
                Err(outcome) => outcome,
            },
            None => outcome,
        };
        let (state, call) = (self.state.clone(), self.call.clone());
        // Streams are dropped inside the runtime (handlers and their SSE tasks).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { record(&state, &call, &outcome).await });
        }
    }
}

/// Meters, counts and keeps one call. Failures are logged: the answer has gone already.
async fn record(state: &AppState, call: &Call, outcome: &Outcome) {
    state.inference.counters.observe(&call.model, outcome);
    let tokens = (outcome.prompt_tokens + outcome.completion_tokens) as i64;
    let metered = crate::v1::limits::meter_tokens(&state.v1.repo, &state.v1.limits, &call.owner, tokens);
    let counted = async {
        match &call.deployment_id {
            Some(id) => metrics::count(&state.inference.repo, id, outcome).await,
            None => Ok(()),
        }
    };
    let entry = entry(state, call, outcome);
    let kept = state.inference.repo.record(&entry);
    if let Err(e) = tokio::try_join!(metered, counted, kept) {
        tracing::error!(error = %e, model = %call.model, "could not record an inference call");
    }
}

/// A conversation as the text history keeps.
pub fn transcript(messages: &[maas_sidecar_client::llm::ChatMessage]) -> String {
    messages
        .iter()
        .map(|m| format!("{}: {}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n")
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(KEPT_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn entry(state: &AppState, call: &Call, outcome: &Outcome) -> HistoryEntry {
    let now_ms = maas_store::now_millis();
    HistoryEntry {
        id: uuid::Uuid::new_v4().to_string(),
        owner: call.owner.clone(),
        at_ms: now_ms,
        kind: call.kind.to_string(),
        model: call.model.clone(),
        deployment_id: call.deployment_id.clone(),
        status: if outcome.error.is_some() { "error" } else { "success" }.into(),
        prompt_tokens: outcome.prompt_tokens,
        completion_tokens: outcome.completion_tokens,
        latency_ms: outcome.latency_ms,
        prompt: cut(&call.prompt),
        output: cut(&outcome.output),
        error: outcome.error.clone(),
        ttl: now_ms / 1000 + state.inference.history_days as i64 * 86400,
        ver: 0,
    }
}
