//! `POST /v1/completions`: text in, text out, no chat template.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maas_sidecar_client::llm::{FinishReason, Prompt, TokenLogprob};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::OpenAiError;
use super::params::OpenAiJson;
use super::stream::{gather_all, sse, Chunks, Head, Usage};
use crate::inference::Call;
use crate::state::AppState;
use crate::v1::guard::Principal;

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptIn,
    /// How many alternatives to report with each token (legacy completions' form).
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: bool,
}

/// One prompt or several; each gets `n` choices.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum PromptIn {
    One(String),
    Many(Vec<String>),
}

/// Most prompts in one request.
const MAX_PROMPTS: usize = 16;
/// The legacy API's default.
const DEFAULT_MAX_TOKENS: u32 = 16;

pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    OpenAiJson(req, sampling): OpenAiJson<CompletionRequest>,
) -> Result<Response, OpenAiError> {
    let prompts = match &req.prompt {
        PromptIn::One(p) => vec![p.clone()],
        PromptIn::Many(ps) if ps.is_empty() || ps.len() > MAX_PROMPTS => {
            return Err(OpenAiError::invalid(
                "prompt",
                format!("Invalid 'prompt': between 1 and {MAX_PROMPTS} prompts."),
            ))
        }
        PromptIn::Many(ps) => ps.clone(),
    };
    if req.echo {
        return Err(OpenAiError::invalid("echo", "'echo' is not supported."));
    }
    if req.logprobs.is_some_and(|n| n > 5) {
        return Err(OpenAiError::invalid("logprobs", "Invalid 'logprobs': at most 5."));
    }
    let params = sampling.params(Some(sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)), req.logprobs)?;
    let text = prompts.join("\n");
    let prompts = prompts.into_iter().map(Prompt::Text).collect();
    let call = Call {
        owner: who.user.user_id.clone(),
        kind: "completion",
        model: req.model.clone(),
        deployment_id: None,
        prompt: text,
    };
    let (streams, recorded) = crate::inference::generate(&state, call, prompts, &params, sampling.n()).await?;
    let chunks = CompletionChunks(Head::new("cmpl", &req.model));
    if sampling.stream {
        return Ok(sse(streams, chunks, sampling.include_usage(), (recorded, state)));
    }
    let per_prompt = sampling.n() as usize;
    let (choices, _) = gather_all(streams).await?;
    recorded.wait(&state).await;
    // Each prompt counts once toward the prompt tokens, whatever `n` is.
    let usage = Usage {
        prompt_tokens: choices.iter().step_by(per_prompt).map(|c| c.prompt_tokens).sum(),
        completion_tokens: choices.iter().map(|c| c.completion_tokens).sum(),
    };
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "index": i,
                "text": c.text,
                "logprobs": req.logprobs.map(|_| legacy_logprobs(c.logprobs.iter().map(|(lp, top)| (lp, top.as_slice())))),
                "finish_reason": c.finish_reason.map(FinishReason::as_str),
            })
        })
        .collect();
    let mut body = chunks.0.object("text_completion", Value::Array(choices));
    body["usage"] = usage.json();
    Ok(Json(body).into_response())
}

/// The completions API's log-probability layout: parallel lists.
fn legacy_logprobs<'a>(tokens: impl Iterator<Item = (&'a TokenLogprob, &'a [TokenLogprob])>) -> Value {
    let (mut text, mut lps, mut tops, mut offsets, mut at) = (vec![], vec![], vec![], vec![], 0usize);
    for (lp, top) in tokens {
        offsets.push(at);
        at += lp.token.len();
        text.push(lp.token.clone());
        lps.push(lp.logprob);
        tops.push(
            top.iter()
                .map(|t| (t.token.clone(), json!(t.logprob)))
                .collect::<serde_json::Map<_, _>>(),
        );
    }
    json!({"tokens": text, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

struct CompletionChunks(Head);

impl Chunks for CompletionChunks {
    fn chunk(&self, choices: Value) -> Value {
        self.0.object("text_completion", choices)
    }

    fn opening(&self, _: u32) -> Option<Value> {
        None
    }

    fn delta(&self, index: u32, text: &str, logprob: Option<(&TokenLogprob, &[TokenLogprob])>) -> Value {
        let logprobs = logprob.map(|t| legacy_logprobs(std::iter::once(t)));
        self.chunk(json!([{"index": index, "text": text, "logprobs": logprobs, "finish_reason": null}]))
    }

    fn finish(&self, index: u32, reason: FinishReason) -> Value {
        self.chunk(json!([{"index": index, "text": "", "logprobs": null, "finish_reason": reason.as_str()}]))
    }
}
