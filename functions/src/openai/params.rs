//! Request bodies parsed at the edge: JSON with the offending field named, and the sampling
//! fields chat and completions share, checked against OpenAI's ranges.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use maas_sidecar_client::llm::SamplingParams;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::OpenAiError;

/// A JSON body read as `T` and as the [`Sampling`] fields every generation takes; a bad one is
/// answered in OpenAI's shape, naming the field. (Two reads of one parsed document rather than
/// `#[serde(flatten)]`, which would lose the name of a mistyped field.)
pub struct OpenAiJson<T>(pub T, pub Sampling);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OpenAiJson<T> {
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OpenAiError> {
        let doc = object(req, state).await?;
        Ok(OpenAiJson(read(doc.clone())?, read(doc)?))
    }
}

/// A JSON body read as `T` alone, for requests that generate nothing.
pub struct OpenAiBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OpenAiBody<T> {
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OpenAiError> {
        Ok(OpenAiBody(read(object(req, state).await?)?))
    }
}

/// The body as a JSON object, within the size limit.
async fn object<S: Send + Sync>(req: Request, state: &S) -> Result<serde_json::Value, OpenAiError> {
    let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|_| {
        OpenAiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is over {} bytes.", super::BODY_LIMIT),
        )
    })?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| OpenAiError::invalid("", format!("We could not parse the JSON body of your request: {e}")))?;
    if !doc.is_object() {
        return Err(OpenAiError::invalid("", "The request body must be a JSON object."));
    }
    Ok(doc)
}

fn read<T: DeserializeOwned>(doc: serde_json::Value) -> Result<T, OpenAiError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        match path.as_str() {
            // A missing field is reported at the object: its name is in the message.
            "." => {
                let field = inner.split('`').nth(1).unwrap_or_default().to_string();
                OpenAiError::invalid(field, format!("Invalid request: {inner}."))
            }
            _ => OpenAiError::invalid(path.clone(), format!("Invalid value for '{path}': {inner}.")),
        }
    })
}

/// `stop`: one string or a list of up to four.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The fields chat and completions share.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Sampling {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub user: Option<String>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Extensions beyond OpenAI's fields, as vLLM names them.
    pub top_k: Option<u32>,
    pub repetition_penalty: Option<f32>,
}

/// Most choices one request may ask for.
pub const MAX_N: u32 = 8;
/// Most tokens one request may generate when it does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 512;

impl Sampling {
    /// Checks the ranges and builds the engine's parameters. `logprobs` is how many
    /// alternatives to report, when log-probabilities were asked for.
    pub fn params(&self, max_tokens: Option<u32>, logprobs: Option<u32>) -> Result<SamplingParams, OpenAiError> {
        let in_range = |param: &str, v: Option<f32>, lo: f32, hi: f32| match v {
            Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(OpenAiError::invalid(
                param,
                format!("Invalid '{param}': {x} is not between {lo} and {hi}."),
            )),
            _ => Ok(()),
        };
        in_range("temperature", self.temperature, 0.0, 2.0)?;
        in_range("top_p", self.top_p, 0.0, 1.0)?;
        in_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        in_range("repetition_penalty", self.repetition_penalty, 0.01, 10.0)?;
        if self.top_p == Some(0.0) {
            return Err(OpenAiError::invalid("top_p", "Invalid 'top_p': it must be above 0."));
        }
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(OpenAiError::invalid(
                "n",
                format!("Invalid 'n': {n} is not between 1 and {MAX_N}."),
            ));
        }
        let max_tokens = max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(OpenAiError::invalid(
                "max_tokens",
                "Invalid 'max_tokens': it must be at least 1.",
            ));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) if v.len() > 4 => {
                return Err(OpenAiError::invalid(
                    "stop",
                    "Invalid 'stop': at most 4 stop sequences.",
                ))
            }
            Some(Stop::Many(v)) => v.clone(),
        };
        if let Some(user) = &self.user {
            if user.len() > 256 {
                return Err(OpenAiError::invalid("user", "Invalid 'user': at most 256 characters."));
            }
        }
        Ok(SamplingParams {
            max_tokens,
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            seed: self.seed.map(|s| s as u64),
            stop,
            logprobs,
        })
    }

    pub fn n(&self) -> u32 {
        self.n.unwrap_or(1)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

/// Choice `i`'s parameters: with a seed, each choice draws from its own seed, so `n` choices
/// differ and each repeats.
pub fn for_choice(params: &SamplingParams, i: u32) -> SamplingParams {
    let mut p = params.clone();
    p.seed = params.seed.map(|s| s.wrapping_add(i as u64));
    p
}
