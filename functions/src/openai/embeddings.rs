//! `POST /v1/embeddings`: texts in, one vector each, as floats or as base64 of little-endian
//! f32 (what OpenAI's SDKs ask for by default).

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use maas_sidecar_client::llm::GenerateError;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::OpenAiError;
use super::params::OpenAiBody;
use crate::state::AppState;
use crate::v1::guard::Principal;

#[derive(Deserialize, Debug)]
pub struct EmbeddingRequest {
    pub model: String,
    /// A string or an array of strings; read by [`inputs`] for clear errors.
    pub input: Value,
    pub encoding_format: Option<String>,
    pub dimensions: Option<u32>,
    #[allow(dead_code)]
    pub user: Option<String>,
}

/// OpenAI's limit on inputs in one request.
pub const MAX_INPUTS: usize = 2048;

/// The texts to embed, checked as OpenAI checks them.
fn inputs(input: &Value) -> Result<Vec<String>, OpenAiError> {
    let texts = match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.is_empty() => {
            return Err(OpenAiError::invalid(
                "input",
                "Invalid 'input': empty array. Expected an array with minimum length 1.",
            ))
        }
        Value::Array(items) if items.len() > MAX_INPUTS => {
            return Err(OpenAiError::invalid(
                "input",
                format!("Invalid 'input': at most {MAX_INPUTS} inputs, got {}.", items.len()),
            ))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Array(_) => Err(OpenAiError::invalid(
                    format!("input[{i}]"),
                    "Token arrays are not supported: this model has its own tokenizer; send text.",
                )),
                _ => Err(OpenAiError::invalid(
                    format!("input[{i}]"),
                    format!("Invalid 'input[{i}]': expected a string."),
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(OpenAiError::invalid(
                "input",
                "Invalid 'input': expected a string or an array of strings.",
            ))
        }
    };
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(OpenAiError::invalid(
            if matches!(input, Value::String(_)) {
                "input".to_string()
            } else {
                format!("input[{i}]")
            },
            "Invalid 'input': an input must not be empty.",
        ));
    }
    Ok(texts)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Encoding {
    Float,
    Base64,
}

fn encoding(format: Option<&str>) -> Result<Encoding, OpenAiError> {
    match format {
        None | Some("float") => Ok(Encoding::Float),
        Some("base64") => Ok(Encoding::Base64),
        Some(other) => Err(OpenAiError::invalid(
            "encoding_format",
            format!("Invalid value: '{other}'. Supported values are: 'float' and 'base64'."),
        )),
    }
}

fn vector_json(v: &[f32], encoding: Encoding) -> Value {
    match encoding {
        Encoding::Float => json!(v),
        Encoding::Base64 => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    OpenAiBody(req): OpenAiBody<EmbeddingRequest>,
) -> Result<Json<Value>, OpenAiError> {
    let texts = inputs(&req.input)?;
    let encoding = encoding(req.encoding_format.as_deref())?;
    let out = crate::inference::embed(&state, &who.user.user_id, &req.model, None, texts)
        .await
        .map_err(|e| match e {
            // A chat model named here: the model is what is wrong.
            GenerateError::BadPrompt { message } => OpenAiError::invalid("model", message),
            other => OpenAiError::from(other),
        })?;
    let width = out.vectors.first().map_or(0, Vec::len) as u32;
    if let Some(d) = req.dimensions.filter(|&d| d != width) {
        return Err(OpenAiError::invalid(
            "dimensions",
            format!("This model's embeddings have {width} dimensions and cannot be shortened to {d}."),
        ));
    }
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": vector_json(v, encoding)}))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_take_a_string_or_strings_and_name_the_bad_one() {
        assert_eq!(inputs(&json!("hi")).unwrap(), vec!["hi"]);
        assert_eq!(inputs(&json!(["a", "b"])).unwrap(), vec!["a", "b"]);
        let param = |v: Value| inputs(&v).unwrap_err().param.unwrap();
        assert_eq!(param(json!([])), "input");
        assert_eq!(param(json!(["a", 3])), "input[1]");
        assert_eq!(param(json!(["a", [1, 2]])), "input[1]");
        assert_eq!(param(json!(["a", ""])), "input[1]");
        assert_eq!(param(json!("")), "input");
        assert_eq!(param(json!({"text": "a"})), "input");
        assert_eq!(param(json!(vec!["x"; MAX_INPUTS + 1])), "input");
        assert_eq!(inputs(&json!(vec!["x"; MAX_INPUTS])).unwrap().len(), MAX_INPUTS);
    }

    #[test]
    fn base64_vectors_are_little_endian_f32_bytes() {
        let v = [1.0f32, -0.5];
        let Value::String(b) = vector_json(&v, Encoding::Base64) else {
            panic!()
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
        assert_eq!(bytes, [1.0f32.to_le_bytes(), (-0.5f32).to_le_bytes()].concat());
        assert_eq!(vector_json(&v, Encoding::Float), json!([1.0, -0.5]));
        assert!(encoding(Some("int8")).is_err());
    }
}
