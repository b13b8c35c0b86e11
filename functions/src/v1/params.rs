//! Parameters the seeds' inference routes share: generation parameters (OpenAI's names and
//! ranges, checked by the same code as `/v1`) and page numbers.

use maas_sidecar_client::llm::SamplingParams;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::envelope::{ApiError, Code};
use crate::openai::params::{Sampling, Stop};

/// How to generate: a deployment's defaults, or one call's, which override them field by field.
#[derive(Deserialize, Serialize, ToSchema, Clone, Debug, Default, PartialEq)]
pub struct Parameters {
    /// Most tokens to generate, at least 1; 512 when nothing says.
    #[schema(minimum = 1, maximum = 8192)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Above 0, at most 1.
    #[schema(exclusive_minimum = 0, maximum = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[schema(minimum = 0, maximum = 1000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[schema(minimum = -2, maximum = 2)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[schema(minimum = -2, maximum = 2)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[schema(minimum = 0.01, maximum = 10)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// Up to 4 strings that end the answer.
    #[schema(max_items = 4)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// The same seed and parameters give the same answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Answer as Server-Sent Events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

impl Parameters {
    /// These parameters, with `defaults` where they say nothing.
    pub fn over(&self, defaults: &Parameters) -> Parameters {
        Parameters {
            max_tokens: self.max_tokens.or(defaults.max_tokens),
            temperature: self.temperature.or(defaults.temperature),
            top_p: self.top_p.or(defaults.top_p),
            top_k: self.top_k.or(defaults.top_k),
            presence_penalty: self.presence_penalty.or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.or(defaults.frequency_penalty),
            repetition_penalty: self.repetition_penalty.or(defaults.repetition_penalty),
            stop: self.stop.clone().or_else(|| defaults.stop.clone()),
            seed: self.seed.or(defaults.seed),
            stream: self.stream.or(defaults.stream),
        }
    }

    /// The engine's parameters, checked as `/v1` checks them; a bad one is named under
    /// `field` (`parameters.temperature`).
    pub fn sampling(&self, field: &str) -> Result<SamplingParams, ApiError> {
        if self.top_k.is_some_and(|k| k > 1000) {
            let name = format!("{field}.top_k");
            return Err(ApiError::field(
                Code::Validation003,
                &name,
                format!("{name} must be 0 to 1000"),
            ));
        }
        let sampling = Sampling {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            n: None,
            stop: self.stop.clone().map(Stop::Many),
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            user: None,
            stream: false,
            stream_options: None,
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
        };
        sampling.params(self.max_tokens, None).map_err(|e| {
            let name = match e.param.as_deref() {
                Some(p) if !p.is_empty() => format!("{field}.{p}"),
                _ => field.to_string(),
            };
            ApiError::field(Code::Validation003, &name, e.message)
        })
    }
}

/// A page number and size: `page` 1 to `max_page` (1 by default), `limit` 1 to 100 (20).
/// `page` and `limit`, as every short listing takes them.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page, 1 by default.
    #[param(minimum = 1, maximum = 1000)]
    pub page: Option<u32>,
    /// Page size, 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// One page of `all`, and the pagination that describes it.
pub fn page_of<T>(all: Vec<T>, page: u32, limit: u32) -> (Vec<T>, super::users::Pagination) {
    let total = all.len();
    let items = all
        .into_iter()
        .skip((page as usize - 1) * limit as usize)
        .take(limit as usize)
        .collect();
    (items, super::users::Pagination::new(page, limit, total))
}

pub fn page(page: Option<u32>, limit: Option<u32>, max_page: u32) -> Result<(u32, u32), ApiError> {
    let (page, limit) = (page.unwrap_or(1), limit.unwrap_or(20));
    if !(1..=max_page).contains(&page) {
        return Err(ApiError::field(
            Code::Validation003,
            "page",
            format!("page must be 1 to {max_page}"),
        ));
    }
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field(Code::Validation003, "limit", "limit must be 1 to 100"));
    }
    Ok((page, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_overrides_its_deployments_defaults_field_by_field() {
        let defaults = Parameters {
            max_tokens: Some(64),
            temperature: Some(0.7),
            stream: Some(true),
            ..Parameters::default()
        };
        let call = Parameters {
            temperature: Some(0.0),
            ..Parameters::default()
        };
        let merged = call.over(&defaults);
        assert_eq!(
            (merged.max_tokens, merged.temperature, merged.stream),
            (Some(64), Some(0.0), Some(true))
        );
        let p = merged.sampling("parameters").unwrap();
        assert_eq!((p.max_tokens, p.temperature), (64, 0.0));
    }

    #[test]
    fn out_of_range_parameters_are_named_under_their_object() {
        let bad = |p: Parameters| p.sampling("parameters").unwrap_err().details[0].field.clone();
        let temp = Parameters {
            temperature: Some(-1.0),
            ..Parameters::default()
        };
        assert_eq!(bad(temp), "parameters.temperature");
        let zero = Parameters {
            max_tokens: Some(0),
            ..Parameters::default()
        };
        assert_eq!(bad(zero), "parameters.max_tokens");
        let k = Parameters {
            top_k: Some(5000),
            ..Parameters::default()
        };
        assert_eq!(bad(k), "parameters.top_k");
    }
}
