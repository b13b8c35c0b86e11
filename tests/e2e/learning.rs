//! The learning check: within 60 s of uploading 2048 samples of a smooth function, the `std`
//! model predicts 256 held-out inputs with R^2 >= 0.99. Run alone (see .ci/run): it measures
//! CPU training against a clock.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixtures::{r2, rows, target};
use crate::on_both_backends;
use crate::support::{spawn_app, Backend};

on_both_backends!(learning_a_smooth_function_reaches_r2_of_0_99_within_60_seconds);

async fn learning_a_smooth_function_reaches_r2_of_0_99_within_60_seconds(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "smooth", 8, 2, false).await;
    let train = rows(2048, 8, 10);
    let held_out = rows(256, 8, 11);
    let truth: Vec<Vec<f32>> = held_out.iter().map(|x| target(x)).collect();
    let untrained = r2(&app.run(&user, "a", "smooth", &held_out).await, &truth);

    let pairs: Vec<_> = train.iter().map(|x| json!([x, target(x)])).collect();
    app.ok(
        "/sgt/public/upload_sgt_model_train_data",
        user.with(json!({"name": "smooth", "app_name": "a", "train_data": pairs})),
    )
    .await;
    let uploaded = Instant::now();
    let mut best = f64::NEG_INFINITY;
    while uploaded.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        best = best.max(r2(&app.run(&user, "a", "smooth", &held_out).await, &truth));
        if best >= 0.99 {
            println!(
                "learning: R^2 {best:.4} after {:.1} s (untrained {untrained:.3})",
                uploaded.elapsed().as_secs_f64()
            );
            return;
        }
    }
    panic!("R^2 only reached {best:.4} in 60 s (untrained {untrained:.3})");
}
