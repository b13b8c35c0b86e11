//! Tasks survive the process that runs them: the real `maas` binary is killed while a
//! validation task runs (the next `maas` finishes it), or stopped with a cancel pending (the
//! next one cancels it cleanly). Nothing half-made is left either way.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::crash::{start, Maas};
use crate::datasets::records;

impl Maas {
    async fn v1(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn sign_up(&self) -> String {
        let body = json!({"username": "crashy", "email": "crashy@example.com", "password": crate::v1::PASSWORD});
        let (s, v) = self.v1(Method::POST, "/api/v1/auth/register", None, Some(body)).await;
        assert_eq!(s, 201, "{v}");
        self.sign_in().await
    }

    async fn sign_in(&self) -> String {
        let body = json!({"email": "crashy@example.com", "password": crate::v1::PASSWORD});
        let (s, v) = self.v1(Method::POST, "/api/v1/auth/login", None, Some(body)).await;
        assert_eq!(s, 200, "{v}");
        v["data"]["access_token"].as_str().unwrap().into()
    }

    /// Uploads `bytes` as a JSONL dataset through presigned parts and completes it; returns
    /// the dataset's id and its validation task's.
    async fn presigned(&self, token: &str, bytes: &[u8]) -> (String, String) {
        let body =
            json!({"name": "big", "format": "jsonl", "size": bytes.len(), "sha256": crate::models::sha256_hex(bytes)});
        let (s, v) = self.v1(Method::POST, "/api/v1/datasets", Some(token), Some(body)).await;
        assert_eq!(s, 201, "{v}");
        let d = &v["data"];
        let size = d["upload"]["part_size"].as_u64().unwrap() as usize;
        let mut done = Vec::new();
        for (part, chunk) in d["upload"]["parts"].as_array().unwrap().iter().zip(bytes.chunks(size)) {
            let url = format!("{}{}", self.url, part["url"].as_str().unwrap());
            let r = self.client.put(url).body(chunk.to_vec()).send().await.unwrap();
            assert_eq!(r.status(), 200);
            done.push(json!({"part_number": part["part_number"], "etag": r.headers()["etag"].to_str().unwrap()}));
        }
        let path = d["upload"]["complete_url"].as_str().unwrap();
        let (s, v) = self
            .v1(Method::POST, path, Some(token), Some(json!({"parts": done})))
            .await;
        assert_eq!(s, 200, "{v}");
        (
            d["id"].as_str().unwrap().into(),
            v["data"]["task_id"].as_str().unwrap().into(),
        )
    }

    async fn task(&self, token: &str, id: &str) -> Value {
        let (s, v) = self
            .v1(Method::GET, &format!("/api/v1/tasks/{id}"), Some(token), None)
            .await;
        assert_eq!(s, 200, "{v}");
        v["data"].clone()
    }

    /// Polls a task (at most two minutes) until `done` says so.
    async fn wait_task(&self, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..6000 {
            let t = self.task(token, id).await;
            if done(&t) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("task {id} did not get there within two minutes");
    }
}

fn is_finished(t: &Value) -> bool {
    ["completed", "failed", "canceled"].contains(&t["status"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_maas_mid_validation_leaves_the_task_to_the_next_maas() {
    let dir = tempfile::tempdir().unwrap();
    // Polling fast must not meet the rate limit.
    let lease = [("MAAS_LEASE_SECS", "1"), ("MAAS_RATE_OTHER", "100000/60")];
    let maas = start(dir.path(), &lease).await;
    let token = maas.sign_up().await;
    // Large enough that validating it takes a while.
    let rows = 2_000_000;
    let bytes = records(rows);
    let (dataset, task) = maas.presigned(&token, &bytes).await;
    let t = maas
        .wait_task(&token, &task, |t| t["status"] == "running" || is_finished(t))
        .await;
    maas.kill();
    assert_eq!(t["status"], "running", "killed while it ran: {t}");

    let maas = start(dir.path(), &lease).await;
    let token = maas.sign_in().await;
    let t = maas.wait_task(&token, &task, is_finished).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["attempts"], 2, "the second maas ran it again: {t}");
    let (_, v) = maas
        .v1(Method::GET, &format!("/api/v1/datasets/{dataset}"), Some(&token), None)
        .await;
    assert_eq!(
        (v["data"]["status"].as_str(), v["data"]["samples_count"].as_u64()),
        (Some("ready"), Some(rows as u64)),
        "{v}"
    );
    maas.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_canceled_while_queued_ends_canceled_and_leaves_no_half_made_dataset() {
    let dir = tempfile::tempdir().unwrap();
    // This maas runs no tasks: the task waits in the queue.
    let maas = start(dir.path(), &[("MAAS_TASK_WORKERS", "0")]).await;
    let token = maas.sign_up().await;
    let (dataset, task) = maas.presigned(&token, &records(100)).await;
    let (s, v) = maas
        .v1(
            Method::PUT,
            &format!("/api/v1/tasks/{task}"),
            Some(&token),
            Some(json!({"status": "canceled"})),
        )
        .await;
    assert_eq!((s, v["data"]["cancel_requested"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["data"]["status"], "queued", "no worker has seen it yet");
    let (s, v) = maas
        .v1(Method::DELETE, &format!("/api/v1/tasks/{task}"), Some(&token), None)
        .await;
    assert_eq!(s, 409, "an unfinished task stays: {v}");
    let (s, v) = maas
        .v1(
            Method::DELETE,
            &format!("/api/v1/datasets/{dataset}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 409, "a task uses the dataset: {v}");
    maas.kill();

    let maas = start(dir.path(), &[]).await;
    let token = maas.sign_in().await;
    let t = maas.wait_task(&token, &task, is_finished).await;
    assert_eq!(t["status"], "canceled", "{t}");
    let (_, v) = maas
        .v1(Method::GET, &format!("/api/v1/datasets/{dataset}"), Some(&token), None)
        .await;
    assert_eq!(
        (v["data"]["status"].as_str(), v["data"]["error"].as_str()),
        (Some("failed"), Some("validation canceled")),
        "{v}"
    );
    let (s, _) = maas
        .v1(
            Method::DELETE,
            &format!("/api/v1/datasets/{dataset}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = maas
        .v1(Method::DELETE, &format!("/api/v1/tasks/{task}"), Some(&token), None)
        .await;
    assert_eq!(s, 200);
    maas.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_maas_mid_processing_leaves_the_task_to_the_next_maas_and_no_half_made_version() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("MAAS_LEASE_SECS", "1"), ("MAAS_RATE_OTHER", "100000/60")];
    let maas = start(dir.path(), &env).await;
    let token = maas.sign_up().await;
    let rows = 1_000_000;
    let (dataset, validation) = maas.presigned(&token, &records(rows)).await;
    let t = maas.wait_task(&token, &validation, is_finished).await;
    assert_eq!(t["status"], "completed", "{t}");
    // The call waits for its task; the kill cuts it off, so it runs on its own.
    let (url, client, tok, id) = (maas.url.clone(), maas.client.clone(), token.clone(), dataset.clone());
    tokio::spawn(async move {
        let body = json!({"dataset_id": id, "output_name": "split", "template": "Q: {instruction} A: {response}"});
        let _ = client
            .post(format!("{url}/api/v1/datasets/process"))
            .bearer_auth(tok)
            .json(&body)
            .send()
            .await;
    });
    let task = loop {
        let (_, v) = maas
            .v1(Method::GET, "/api/v1/tasks?type=dataset_processing", Some(&token), None)
            .await;
        if let Some(t) = v["data"]["items"].as_array().and_then(|a| a.first()) {
            break t["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let t = maas
        .wait_task(&token, &task, |t| t["status"] == "running" || is_finished(t))
        .await;
    maas.kill();
    assert_eq!(t["status"], "running", "killed while it ran: {t}");

    let maas = start(dir.path(), &env).await;
    let token = maas.sign_in().await;
    let t = maas.wait_task(&token, &task, is_finished).await;
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_u64()),
        (Some("completed"), Some(2)),
        "{t}"
    );
    let (_, v) = maas
        .v1(
            Method::GET,
            &format!("/api/v1/datasets/versions?dataset_id={dataset}"),
            Some(&token),
            None,
        )
        .await;
    let version = &v["data"]["items"][0];
    assert_eq!(version["status"], "ready", "{v}");
    let samples: u64 = version["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["samples"].as_u64().unwrap())
        .sum();
    assert_eq!(samples, rows as u64, "every record in exactly one split: {version}");
    maas.kill();
}
