//! The learning check: within 60 s of uploading 2048 samples of a smooth function, the `std`
//! model predicts 256 held-out inputs with R^2 >= 0.99. Run alone (see .ci/run): it measures
//! CPU training against a clock.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::on_both_backends;
use crate::support::{rows, spawn_app, Backend};

on_both_backends!(learning_a_smooth_function_reaches_r2_of_0_99_within_60_seconds);

/// The target: smooth, with outputs inside [-0.9, 0.9].
fn target(x: &[f32]) -> Vec<f32> {
    let w = [0.8, -0.6, 0.4, 0.3, -0.5, 0.7, -0.2, 0.1];
    let s: f32 = x.iter().zip(w).map(|(a, b)| a * b).sum();
    vec![0.9 * s.tanh(), 0.9 * (x[0] * x[1] + 0.5 * x[2] - 0.3 * x[7]).sin()]
}

/// Mean over outputs of 1 - SS_res / SS_tot (scikit-learn's `r2_score` default).
fn r2(pred: &[Vec<f32>], truth: &[Vec<f32>]) -> f64 {
    let outs = truth[0].len();
    (0..outs)
        .map(|j| {
            let mean = truth.iter().map(|t| t[j] as f64).sum::<f64>() / truth.len() as f64;
            let ss_tot: f64 = truth.iter().map(|t| (t[j] as f64 - mean).powi(2)).sum();
            let ss_res: f64 = pred.iter().zip(truth).map(|(p, t)| (p[j] as f64 - t[j] as f64).powi(2)).sum();
            1.0 - ss_res / ss_tot
        })
        .sum::<f64>()
        / outs as f64
}

async fn learning_a_smooth_function_reaches_r2_of_0_99_within_60_seconds(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "smooth", 8, 2, false).await;
    let train = rows(2048, 8, 10);
    let held_out = rows(256, 8, 11);
    let truth: Vec<Vec<f32>> = held_out.iter().map(|x| target(x)).collect();
    let untrained = r2(&app.run(&user, "a", "smooth", &held_out).await, &truth);

    let pairs: Vec<_> = train.iter().map(|x| json!([x, target(x)])).collect();
    app.ok("/sgt/public/upload_sgt_model_train_data", user.with(json!({"name": "smooth", "app_name": "a", "train_data": pairs})))
        .await;
    let uploaded = Instant::now();
    let mut best = f64::NEG_INFINITY;
    while uploaded.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        best = best.max(r2(&app.run(&user, "a", "smooth", &held_out).await, &truth));
        if best >= 0.99 {
            println!("learning: R^2 {best:.4} after {:.1} s (untrained {untrained:.3})", uploaded.elapsed().as_secs_f64());
            return;
        }
    }
    panic!("R^2 only reached {best:.4} in 60 s (untrained {untrained:.3})");
}
