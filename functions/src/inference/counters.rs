//! This process's inference counters per model, in Prometheus' text format for `GET /metrics`:
//! calls, errors, tokens, and latency and time-to-first-token histograms. (A deployment's own
//! counters live in the table, shared by every instance: see `metrics`.)

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use super::metrics::BUCKETS_MS;
use super::observe::Outcome;

#[derive(Default, Clone)]
struct Histogram {
    /// Calls at or under each bound of [`BUCKETS_MS`], then over all of them.
    buckets: [u64; BUCKETS_MS.len() + 1],
    sum_ms: u64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, ms: u64) {
        let i = BUCKETS_MS.iter().position(|&b| ms <= b).unwrap_or(BUCKETS_MS.len());
        self.buckets[i] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, model: &str) {
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            let le = BUCKETS_MS
                .get(i)
                .map_or("+Inf".to_string(), |b| format!("{}", *b as f64 / 1000.0));
            let _ = writeln!(out, "{name}_bucket{{model=\"{model}\",le=\"{le}\"}} {seen}");
        }
        let _ = writeln!(out, "{name}_sum{{model=\"{model}\"}} {}", self.sum_ms as f64 / 1000.0);
        let _ = writeln!(out, "{name}_count{{model=\"{model}\"}} {}", self.count);
    }
}

#[derive(Default, Clone)]
struct ModelStats {
    requests: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    latency: Histogram,
    ttft: Histogram,
}

/// A metric's name, its help text, and how to read it from a model's stats.
type Counter = (&'static str, &'static str, fn(&ModelStats) -> u64);
type HistogramOf = (&'static str, &'static str, for<'a> fn(&'a ModelStats) -> &'a Histogram);

#[derive(Default)]
pub struct ModelCounters(Mutex<BTreeMap<String, ModelStats>>);

/// A label value as Prometheus' text format writes it.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl ModelCounters {
    pub fn observe(&self, model: &str, o: &Outcome) {
        let mut all = self.0.lock().expect("counters lock");
        let s = all.entry(model.to_string()).or_default();
        s.requests += 1;
        s.errors += o.error.is_some() as u64;
        s.prompt_tokens += o.prompt_tokens;
        s.completion_tokens += o.completion_tokens;
        s.latency.observe(o.latency_ms);
        if let Some(t) = o.ttft_ms {
            s.ttft.observe(t);
        }
    }

    /// Every counter in Prometheus' text exposition format.
    pub fn prometheus(&self) -> String {
        let all = self.0.lock().expect("counters lock").clone();
        let mut out = String::new();
        let counters: [Counter; 4] = [
            ("maas_inference_requests_total", "Inference calls, by model.", |s| {
                s.requests
            }),
            (
                "maas_inference_errors_total",
                "Inference calls that failed or were refused.",
                |s| s.errors,
            ),
            ("maas_inference_prompt_tokens_total", "Prompt tokens read.", |s| {
                s.prompt_tokens
            }),
            ("maas_inference_completion_tokens_total", "Tokens generated.", |s| {
                s.completion_tokens
            }),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (model, s) in &all {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", label(model), get(s));
            }
        }
        let histograms: [HistogramOf; 2] = [
            (
                "maas_inference_latency_seconds",
                "Time from the call to its last token.",
                |s| &s.latency,
            ),
            (
                "maas_inference_time_to_first_token_seconds",
                "Time from the call to its first token.",
                |s| &s.ttft,
            ),
        ];
        for (name, help, get) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (model, s) in &all {
                get(s).write(&mut out, name, &label(model));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_cumulative_buckets_are_written_per_model() {
        let c = ModelCounters::default();
        let ok = Outcome {
            prompt_tokens: 10,
            completion_tokens: 5,
            latency_ms: 40,
            ttft_ms: Some(20),
            ..Outcome::default()
        };
        c.observe("m", &ok);
        c.observe(
            "m",
            &Outcome {
                latency_ms: 400_000,
                error: Some("x".into()),
                ..Outcome::default()
            },
        );
        let text = c.prometheus();
        for line in [
            "maas_inference_requests_total{model=\"m\"} 2",
            "maas_inference_errors_total{model=\"m\"} 1",
            "maas_inference_prompt_tokens_total{model=\"m\"} 10",
            "maas_inference_latency_seconds_bucket{model=\"m\",le=\"0.025\"} 0",
            "maas_inference_latency_seconds_bucket{model=\"m\",le=\"0.05\"} 1",
            "maas_inference_latency_seconds_bucket{model=\"m\",le=\"300\"} 1",
            "maas_inference_latency_seconds_bucket{model=\"m\",le=\"+Inf\"} 2",
            "maas_inference_latency_seconds_count{model=\"m\"} 2",
            "maas_inference_time_to_first_token_seconds_count{model=\"m\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
