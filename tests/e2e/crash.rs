//! Crash safety, with the real `maas` binary killed by SIGKILL at awkward moments.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use maas_store::records::sgt::{SgtModel, SgtRepo};
use maas_store::records::training::{JobStatus, TrainJob};
use maas_store::{StoreConfig, Stores};
use serde_json::json;

use crate::support::{rows, User};

pub struct Maas {
    child: Child,
    pub url: String,
    pub client: reqwest::Client,
}

const SYSTEM_KEY: &str = "crash-test-system-key";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start(dir: &Path, extra: &[(&str, &str)]) -> Maas {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_maas"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env("MAAS_SYSTEM_KEY", SYSTEM_KEY)
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let maas = Maas {
        child,
        url: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    for _ in 0..200 {
        if let Ok(r) = maas.client.get(format!("{}/health", maas.url)).send().await {
            if r.status() == 200 {
                return maas;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("maas did not become healthy");
}

impl Maas {
    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

async fn setup_user(m: &Maas) -> User {
    let user = User {
        id: "crash-user".into(),
        key: "crash-key".into(),
    };
    m.post(
        "/sgt/private/update_auth_token",
        json!({"key": SYSTEM_KEY, "secret_id": user.id, "secret_key": user.key, "end_time": "2099-01-01 00:00:00"}),
    )
    .await;
    user
}

async fn open_repo(dir: &Path) -> SgtRepo {
    SgtRepo::new(
        &Stores::open(&StoreConfig::Embedded { dir: dir.to_path_buf() })
            .await
            .unwrap(),
    )
}

async fn state(dir: &Path, user: &User, name: &str) -> (SgtModel, Option<TrainJob>, SgtRepo) {
    let repo = open_repo(dir).await;
    let model = repo
        .get_model(&user.id, "a", name)
        .await
        .unwrap()
        .expect("model survives");
    let job = repo.get::<TrainJob>(&TrainJob::key_for(&model.model_id)).await.unwrap();
    (model, job, repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_maas_mid_upload_leaves_the_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (512usize, 2usize);
    let mut maas = start(dir.path(), &[]).await;
    let user = setup_user(&maas).await;
    maas.post(
        "/sgt/public/create_sgt_model",
        user.with(json!({"name": "m", "app_name": "a", "model_type": "std", "client_data": "", "in_size": inp, "out_size": out, "is_public": false})),
    )
    .await;
    let pairs: Vec<_> = rows(2048, inp, 1).into_iter().map(|x| json!([x, [0.1, 0.2]])).collect();
    let body = serde_json::to_vec(&user.with(json!({"name": "m", "app_name": "a", "train_data": pairs}))).unwrap();
    for delay_ms in [0u64, 20, 60, 150, 400, 1200] {
        let (client, url, body) = (maas.client.clone(), maas.url.clone(), body.clone());
        let upload = tokio::spawn(async move {
            client
                .post(format!("{url}/sgt/public/upload_sgt_model_train_data"))
                .body(body)
                .send()
                .await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        maas.kill();
        let _ = upload.await;
        maas = start(dir.path(), &[]).await;
    }
    maas.kill();

    let (model, job, repo) = state(dir.path(), &user, "m").await;
    let chunks = repo
        .load_train_data(&model.model_id)
        .await
        .expect("every chunk record has its data");
    assert_eq!(chunks.len() as u64, model.data_version, "one chunk per counted upload");
    assert_eq!(chunks.iter().map(|(c, _)| c.rows).sum::<u64>(), model.samples);
    for (c, data) in &chunks {
        assert_eq!(
            data.len() as u64,
            c.rows * (inp + out) as u64 * 4,
            "chunk {} is whole",
            c.seq
        );
    }
    match job {
        Some(j) => assert_eq!(j.data_version, model.data_version),
        None => assert_eq!(model.data_version, 0),
    }
    println!("{} of 6 interrupted uploads landed whole", model.data_version);
    drop(repo);

    let maas = start(dir.path(), &[]).await;
    let outs = maas
        .post(
            "/sgt/public/run_sgt_model",
            user.with(json!({"name": "m", "app_name": "a", "data": rows(2, inp, 2)})),
        )
        .await;
    assert_eq!(outs.as_array().unwrap().len(), 2);
    maas.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sidecars_training_job_resumes_from_its_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Patience high enough that the job cannot finish before it is killed.
    let fast = [
        ("MAAS_LEASE_SECS", "2"),
        ("MAAS_CHECKPOINT_SECS", "1"),
        ("MAAS_TRAIN_PATIENCE_STEPS", "10000000"),
    ];
    let maas = start(dir.path(), &fast).await;
    let user = setup_user(&maas).await;
    maas.post(
        "/sgt/public/create_sgt_model",
        user.with(json!({"name": "t", "app_name": "a", "model_type": "std", "client_data": "", "in_size": 8, "out_size": 2, "is_public": false})),
    )
    .await;
    // Label noise the model cannot learn keeps the loss well above the "negligible" stop.
    let noise = |i: usize| ((i * 2_654_435_761) % 1000) as f32 / 25_000.0 - 0.02;
    let pairs: Vec<_> = rows(2048, 8, 3)
        .into_iter()
        .enumerate()
        .map(|(i, x)| json!([x, [0.9 * (x[0] * x[1]).sin() + noise(i), 0.5 * x[2]]]))
        .collect();
    maas.post(
        "/sgt/public/upload_sgt_model_train_data",
        user.with(json!({"name": "t", "app_name": "a", "train_data": pairs})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    maas.kill();

    let (model, job, repo) = state(dir.path(), &user, "t").await;
    let first = model
        .checkpoint
        .clone()
        .expect("checkpoints were written while training");
    let job = job.expect("job exists");
    assert_eq!(job.status, JobStatus::Running, "the job was mid-training when killed");
    let dead_worker = job.lease_owner.clone();
    drop(repo);

    // A new process must wait out the dead one's lease, then continue from its checkpoint.
    let maas = start(dir.path(), &fast).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    maas.kill();
    let (model, job, _) = state(dir.path(), &user, "t").await;
    let job = job.unwrap();
    let second = model.checkpoint.expect("checkpoint");
    assert_ne!(job.lease_owner, dead_worker, "another worker took the job over");
    assert!(second.version > first.version, "training went on after the restart");
    // At most ~2.5 s of training happened after the restart, far fewer steps than the ~5 s
    // before it: a step count beyond the first checkpoint's proves the counter (and weights)
    // were resumed, not restarted.
    assert!(
        second.step > first.step,
        "resumed at step {} after checkpoint at {}",
        second.step,
        first.step
    );
    // Restarting from scratch would put the loss back near its initial ~0.2; resuming keeps it
    // at the checkpoint's level (up to minibatch noise).
    assert!(
        second.loss <= first.loss * 3.0,
        "loss went back up: {} -> {}",
        first.loss,
        second.loss
    );
}
