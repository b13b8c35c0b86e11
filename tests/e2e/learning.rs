//! The learning check: within 60 s of uploading 2048 samples of a smooth function, the `std`
//! model predicts 256 held-out inputs with R^2 >= 0.99, alone and while another user's big
//! model trains on the same sidecar. Run alone (see .ci/run): they measure CPU training against
//! a clock.

use std::time::{Duration, Instant};

use serde_json::json;

use maas_store::records::sgt::{SgtModel, SgtRepo};
use maas_store::records::training::{JobStatus, TrainJob};

use crate::fixtures::{r2, rows, target};
use crate::on_both_backends;
use crate::support::{spawn_app, spawn_with, Backend, TestApp, User};

on_both_backends!(
    learning_a_smooth_function_reaches_r2_of_0_99_within_60_seconds,
    learning_is_shared_so_a_small_model_learns_while_a_big_one_is_still_training,
);

async fn learning_a_smooth_function_reaches_r2_of_0_99_within_60_seconds(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "smooth", 8, 2, false).await;
    let train = rows(2048, 8, 10);
    let held_out = rows(256, 8, 11);
    let truth: Vec<Vec<f32>> = held_out.iter().map(|x| target(x)).collect();
    let untrained = r2(&app.run(&user, "a", "smooth", &held_out).await, &truth);

    upload(&app, &user, "smooth", &train, target).await;
    let seconds = reaches_r2(&app, &user, "smooth", &held_out, &truth).await;
    println!("learning: R^2 0.99 after {seconds:.1} s (untrained {untrained:.3})");
}

/// Another user's long job (a wide model, a large dataset of a function it cannot fit soon)
/// is training when a small, easy model gets its data. The small one learns as fast as the
/// learning check asks, the big one is still training then, and it goes on afterwards from
/// its checkpoint without losing a step.
async fn learning_is_shared_so_a_small_model_learns_while_a_big_one_is_still_training(b: Backend) {
    // Patience no job reaches here: the big model trains for as long as the test runs.
    let app = spawn_with(b, |c| c.training.train_patience_steps = 1_000_000_000).await;
    let repo = app.repo();
    let (big_user, user) = (app.new_user().await, app.new_user().await);
    let (wide, outs) = (256, 16);
    let directions = rows(outs, wide, 30);
    let hard = |x: &[f32]| -> Vec<f32> {
        directions
            .iter()
            .map(|w| 0.9 * (6.0 * x.iter().zip(w).map(|(a, b)| a * b).sum::<f32>()).sin())
            .collect()
    };
    app.create_model(&big_user, "a", "big", wide as u32, outs as u32, false)
        .await;
    upload(&app, &big_user, "big", &rows(4096, wide, 31), hard).await;
    let big = repo.get_model(&big_user.id, "a", "big").await.unwrap().unwrap();
    let mut steps = StepLog::default();
    while steps.record(&repo, &big).await == 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    app.create_model(&user, "a", "small", 8, 2, false).await;
    let held_out = rows(256, 8, 11);
    let truth: Vec<Vec<f32>> = held_out.iter().map(|x| target(x)).collect();
    upload(&app, &user, "small", &rows(2048, 8, 10), target).await;
    let seconds = reaches_r2(&app, &user, "small", &held_out, &truth).await;
    let big_job = job(&repo, &big).await;
    assert_ne!(big_job.status, JobStatus::Done, "the big model must still be training");
    let at_small_done = steps.record(&repo, &big).await;
    println!("learning (shared): the small model reached R^2 0.99 after {seconds:.1} s; the big one is at step {at_small_done}");

    let waited = Instant::now();
    while steps.record(&repo, &big).await <= at_small_done {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the big model did not go on training"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The steps of a model's checkpoints as seen over time: they never go back.
#[derive(Default)]
struct StepLog(u64);

impl StepLog {
    async fn record(&mut self, repo: &SgtRepo, model: &SgtModel) -> u64 {
        let now = repo
            .get_model(&model.owner, &model.app_name, &model.name)
            .await
            .unwrap()
            .unwrap()
            .checkpoint
            .map_or(0, |c| c.step);
        assert!(now >= self.0, "checkpoint went back from step {} to {now}", self.0);
        self.0 = now;
        now
    }
}

async fn job(repo: &SgtRepo, model: &SgtModel) -> TrainJob {
    repo.get::<TrainJob>(&TrainJob::key_for(&model.model_id))
        .await
        .unwrap()
        .expect("the model has a training job")
}

async fn upload(app: &TestApp, user: &User, name: &str, inputs: &[Vec<f32>], f: impl Fn(&[f32]) -> Vec<f32>) {
    let pairs: Vec<_> = inputs.iter().map(|x| json!([x, f(x)])).collect();
    app.ok(
        "/sgt/public/upload_sgt_model_train_data",
        user.with(json!({"name": name, "app_name": "a", "train_data": pairs})),
    )
    .await;
}

/// Seconds until the model's answers to `held_out` reach R^2 0.99; fails after 60 s.
async fn reaches_r2(app: &TestApp, user: &User, name: &str, held_out: &[Vec<f32>], truth: &[Vec<f32>]) -> f64 {
    let uploaded = Instant::now();
    let mut best = f64::NEG_INFINITY;
    while uploaded.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        best = best.max(r2(&app.run(user, "a", name, held_out).await, truth));
        if best >= 0.99 {
            return uploaded.elapsed().as_secs_f64();
        }
    }
    panic!("{name}: R^2 only reached {best:.4} in 60 s");
}
