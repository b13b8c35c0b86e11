//! What the API asks of the language and embedding models and what it hears back: plain Rust types
//! (serde for the HTTP hop), with no OpenAI or seed shapes; those live at the API's edge.

use serde::{Deserialize, Serialize};

/// How tokens are chosen. Defaults are OpenAI's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// 0 is greedy.
    pub temperature: f32,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches this.
    pub top_p: f32,
    /// Only the `top_k` most likely tokens; 0 turns it off.
    pub top_k: u32,
    /// OpenAI's: subtracted from a token's logit once it has appeared in the output.
    pub presence_penalty: f32,
    /// OpenAI's: subtracted per appearance in the output.
    pub frequency_penalty: f32,
    /// Hugging Face's: logits of tokens in the prompt or output are divided (if positive) or
    /// multiplied by this; 1 turns it off.
    pub repetition_penalty: f32,
    /// The same seed and parameters give the same tokens again.
    pub seed: Option<u64>,
    /// Generation ends before any of these strings; they are not part of the text.
    pub stop: Vec<String>,
    /// Report each chosen token's log-probability, with this many alternatives.
    pub logprobs: Option<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: 256,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            stop: Vec::new(),
            logprobs: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Text, tokenized as it is.
    Text(String),
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: Prompt,
    pub params: SamplingParams,
    /// Who asked: the engine shares its time fairly between users.
    pub user: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens`, or the model's context, reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A token's log-probability, as OpenAI reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// What a generation stream says, in order: tokens, then one `Done` (or `Failed`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GenerateEvent {
    /// New text (possibly empty while a character or a possible stop string is incomplete).
    Token {
        text: String,
        logprob: Option<TokenLogprob>,
        top_logprobs: Vec<TokenLogprob>,
    },
    Done {
        finish_reason: FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
        /// Milliseconds from submission to the first token.
        time_to_first_token_ms: f64,
    },
    Failed {
        message: String,
    },
}

/// Why the engine refused a request before it started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GenerateError {
    #[error("the model {model:?} does not exist")]
    UnknownModel { model: String },
    #[error("the model is loading; try again shortly")]
    Loading,
    #[error("too many requests are waiting for this model; try again shortly")]
    QueueFull,
    #[error("this model's maximum context length is {context} tokens, but the request needs {needed} tokens ({prompt} in the prompt, {max_tokens} to generate)")]
    ContextTooLong {
        context: u32,
        prompt: u32,
        max_tokens: u32,
        needed: u32,
    },
    #[error("{message}")]
    BadPrompt { message: String },
    #[error("{message}")]
    Internal { message: String },
}

/// A model the engine serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmModelInfo {
    pub id: String,
    /// `chat` (a language model) or `embedding`.
    pub kind: String,
    pub context: u32,
    pub created: i64,
    /// An embedding model's vector length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default)]
    pub status: ModelState,
}

/// Where a served model stands: sizes are known once it is ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    Loading,
    #[default]
    Ready,
    Failed,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Failed => "failed",
        }
    }
}

/// Texts to embed with one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    pub model: String,
    pub inputs: Vec<String>,
    /// Who asked.
    pub user: String,
}

/// One vector per input, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens embedded, after truncation.
    pub prompt_tokens: u32,
    /// Inputs cut at the model's maximum length.
    pub truncated: u32,
}

/// Texts to count tokens of, as a language model reads them (dataset quality checks).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenCountRequest {
    pub model: String,
    pub texts: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenCounts {
    pub counts: Vec<u32>,
    /// The model's context length.
    pub context: u32,
}
