//! What the load generators share: a closed-loop driver and the summary line they print.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// `clients` tasks each send `requests` requests back to back; returns the latencies of the
/// successful ones (ms), the number of failures and the wall time.
pub async fn drive<F, Fut>(clients: usize, requests: usize, call: F) -> (Vec<f64>, usize, Duration)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::with_capacity(requests), 0);
                for _ in 0..requests {
                    let t = Instant::now();
                    if call().await {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    (lat, errors, start.elapsed())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn summary(mode: &str, mut lat_ms: Vec<f64>, errors: usize, wall: Duration, extra: Value) -> Value {
    lat_ms.sort_by(f64::total_cmp);
    let mut v = json!({
        "mode": mode, "requests": lat_ms.len() + errors, "errors": errors,
        "rps": lat_ms.len() as f64 / wall.as_secs_f64(),
        "p50_ms": percentile(&lat_ms, 0.5), "p99_ms": percentile(&lat_ms, 0.99),
    });
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    v
}
