//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maas_sidecar_client::llm::{ChatMessage, FinishReason, Prompt, TokenLogprob};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::OpenAiError;
use super::params::OpenAiJson;
use super::stream::{gather_all, logprob_json, sse, Chunks, Head};
use crate::inference::Call;
use crate::state::AppState;
use crate::v1::guard::Principal;

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<MessageIn>,
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
}

#[derive(Deserialize, Debug)]
pub struct MessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[allow(dead_code)]
    pub name: Option<String>,
}

/// A message's content: text, or a list of parts of which only text parts are supported.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize, Debug)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// The conversation as the engine takes it, checked.
fn messages(req: &ChatRequest) -> Result<Vec<ChatMessage>, OpenAiError> {
    if req.messages.is_empty() {
        return Err(OpenAiError::invalid(
            "messages",
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
        ));
    }
    req.messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(OpenAiError::invalid(
                    format!("messages[{i}].role"),
                    format!("Invalid value: '{}'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.", m.role),
                ));
            }
            let content = match &m.content {
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => parts
                    .iter()
                    .map(|p| match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => Ok(t.as_str()),
                        _ => Err(OpenAiError::invalid(
                            format!("messages[{i}].content"),
                            format!("Content parts of type '{}' are not supported by this model; send text.", p.kind),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(""),
                None if m.role == "assistant" => String::new(),
                None => {
                    return Err(OpenAiError::invalid(
                        format!("messages[{i}].content"),
                        format!("Missing required parameter: 'messages[{i}].content'."),
                    ))
                }
            };
            // `developer` is the newer name for `system`; templates know only the older one.
            let role = if m.role == "developer" { "system" } else { m.role.as_str() };
            Ok(ChatMessage {
                role: role.into(),
                content,
            })
        })
        .collect()
}

pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    OpenAiJson(req, sampling): OpenAiJson<ChatRequest>,
) -> Result<Response, OpenAiError> {
    let messages = messages(&req)?;
    let top = match (req.logprobs, req.top_logprobs) {
        (_, Some(n)) if n > 20 => {
            return Err(OpenAiError::invalid(
                "top_logprobs",
                "Invalid 'top_logprobs': at most 20.",
            ))
        }
        (false, Some(_)) => {
            return Err(OpenAiError::invalid(
                "top_logprobs",
                "'top_logprobs' needs 'logprobs' set to true.",
            ))
        }
        (true, n) => Some(n.unwrap_or(0)),
        (false, None) => None,
    };
    let params = sampling.params(req.max_completion_tokens.or(sampling.max_tokens), top)?;
    let call = Call {
        owner: who.user.user_id.clone(),
        kind: "chat",
        model: req.model.clone(),
        deployment_id: None,
        prompt: crate::inference::observe::transcript(&messages),
    };
    let (streams, recorded) =
        crate::inference::generate(&state, call, vec![Prompt::Chat(messages)], &params, sampling.n()).await?;
    let chunks = ChatChunks(Head::new("chatcmpl", &req.model));
    if sampling.stream {
        return Ok(sse(streams, chunks, sampling.include_usage(), (recorded, state)));
    }
    let (choices, usage) = gather_all(streams).await?;
    recorded.wait(&state).await;
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text, "refusal": null},
                "logprobs": req.logprobs.then(|| json!({"content": c.logprobs.iter().map(|(lp, top)| logprob_json(lp, top)).collect::<Vec<_>>(), "refusal": null})),
                "finish_reason": c.finish_reason.map(FinishReason::as_str),
            })
        })
        .collect();
    let mut body = chunks.0.object("chat.completion", Value::Array(choices));
    body["usage"] = usage.json();
    Ok(Json(body).into_response())
}

struct ChatChunks(Head);

impl Chunks for ChatChunks {
    fn chunk(&self, choices: Value) -> Value {
        self.0.object("chat.completion.chunk", choices)
    }

    fn opening(&self, index: u32) -> Option<Value> {
        Some(self.chunk(json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])))
    }

    fn delta(&self, index: u32, text: &str, logprob: Option<(&TokenLogprob, &[TokenLogprob])>) -> Value {
        let logprobs = logprob.map(|(lp, top)| json!({"content": [logprob_json(lp, top)], "refusal": null}));
        self.chunk(json!([{"index": index, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": null}]))
    }

    fn finish(&self, index: u32, reason: FinishReason) -> Value {
        self.chunk(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": reason.as_str()}]))
    }
}
