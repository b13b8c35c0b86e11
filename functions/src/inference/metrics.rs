//! A deployment's counters: kept in the table (so every Lambda instance adds to the same ones)
//! as plain sums plus two histograms, latency and time to first token, in fixed buckets. The
//! percentiles reported are the upper bounds of the buckets they fall in.

use maas_store::records::inference::InferenceRepo;
use maas_store::StoreError;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::observe::Outcome;

/// Bucket upper bounds in milliseconds; a last, unbounded bucket catches the rest.
pub const BUCKETS_MS: [u64; 14] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000,
];

fn bucket(ms: u64) -> String {
    match BUCKETS_MS.iter().find(|&&b| ms <= b) {
        Some(b) => format!("le_{b}"),
        None => "le_inf".into(),
    }
}

/// Adds one call to the deployment's counters.
pub async fn count(repo: &InferenceRepo, id: &str, o: &Outcome) -> Result<(), StoreError> {
    let mut adds: Vec<(String, i64)> = vec![
        ("requests".into(), 1),
        ("errors".into(), o.error.is_some() as i64),
        ("prompt_tokens".into(), o.prompt_tokens as i64),
        ("completion_tokens".into(), o.completion_tokens as i64),
        ("busy_ms".into(), o.latency_ms as i64),
        (format!("latency_{}", bucket(o.latency_ms)), 1),
    ];
    if let Some(t) = o.ttft_ms {
        adds.push((format!("ttft_{}", bucket(t)), 1));
        // Generation time after the first token, for tokens/s.
        adds.push(("decode_ms".into(), o.latency_ms.saturating_sub(t) as i64));
    }
    let adds = adds
        .into_iter()
        .filter(|(_, by)| *by != 0)
        .map(|(c, by)| async move { repo.count(id, &c, by).await });
    futures::future::try_join_all(adds).await.map(drop)
}

#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub struct Percentiles {
    /// Upper bound, in ms, of the bucket holding the median; `null` before any call.
    pub p50: Option<u64>,
    pub p99: Option<u64>,
}

#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub struct DeploymentMetrics {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub latency_ms: Percentiles,
    pub time_to_first_token_ms: Percentiles,
    /// Generated tokens per second of generation after the first token, over all calls.
    pub tokens_per_second: f64,
    /// The bucket bounds the percentiles come from.
    pub buckets_ms: Vec<u64>,
}

fn get(counters: &Map<String, Value>, name: &str) -> i64 {
    counters.get(name).and_then(maas_store::item::as_i64).unwrap_or(0)
}

/// The histogram's percentile `q` (0..1): the bound of the first bucket that reaches it.
fn percentile(counters: &Map<String, Value>, prefix: &str, q: f64) -> Option<u64> {
    let counts: Vec<(Option<u64>, i64)> = BUCKETS_MS
        .iter()
        .map(|&b| (Some(b), get(counters, &format!("{prefix}_le_{b}"))))
        .chain(std::iter::once((None, get(counters, &format!("{prefix}_le_inf")))))
        .collect();
    let total: i64 = counts.iter().map(|c| c.1).sum();
    if total == 0 {
        return None;
    }
    let need = (q * total as f64).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (bound, n) in counts {
        seen += n;
        if seen >= need {
            return Some(bound.unwrap_or(u64::MAX));
        }
    }
    None
}

pub fn view(counters: &Map<String, Value>) -> DeploymentMetrics {
    let decode_ms = get(counters, "decode_ms");
    let completion = get(counters, "completion_tokens");
    DeploymentMetrics {
        requests: get(counters, "requests"),
        errors: get(counters, "errors"),
        prompt_tokens: get(counters, "prompt_tokens"),
        completion_tokens: completion,
        latency_ms: Percentiles {
            p50: percentile(counters, "latency", 0.5),
            p99: percentile(counters, "latency", 0.99),
        },
        time_to_first_token_ms: Percentiles {
            p50: percentile(counters, "ttft", 0.5),
            p99: percentile(counters, "ttft", 0.99),
        },
        tokens_per_second: if decode_ms > 0 {
            (completion as f64 * 1000.0 / decode_ms as f64 * 10.0).round() / 10.0
        } else {
            0.0
        },
        buckets_ms: BUCKETS_MS.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_fall_in_the_first_bucket_that_holds_them() {
        assert_eq!(bucket(0), "le_10");
        assert_eq!(bucket(10), "le_10");
        assert_eq!(bucket(11), "le_25");
        assert_eq!(bucket(300_001), "le_inf");
    }

    #[test]
    fn percentiles_are_bucket_bounds_and_rates_come_from_decode_time() {
        let counters = json!({
            "requests": 100, "errors": 2, "completion_tokens": 500, "decode_ms": 5000,
            "latency_le_100": 50, "latency_le_250": 49, "latency_le_inf": 1,
            "ttft_le_25": 100,
        });
        let m = view(counters.as_object().unwrap());
        assert_eq!(
            m.latency_ms,
            Percentiles {
                p50: Some(100),
                p99: Some(250)
            }
        );
        assert_eq!(
            m.time_to_first_token_ms,
            Percentiles {
                p50: Some(25),
                p99: Some(25)
            }
        );
        assert_eq!(m.tokens_per_second, 100.0);
        assert_eq!((m.requests, m.errors), (100, 2));
        let empty = view(&Map::new());
        assert_eq!((empty.latency_ms.p50, empty.tokens_per_second), (None, 0.0));
    }
}
