//! Datasets and tasks over HTTP on both backends: form uploads validated at once, presigned
//! uploads validated by a task the sidecar runs, the errors a user gets for bad files, and the
//! task routes (list, detail, rename, logs, delete).

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(
    a_small_dataset_is_validated_on_upload_listed_previewed_and_deleted,
    invalid_files_are_refused_with_their_line_numbers_and_nothing_is_kept,
    a_large_dataset_goes_through_presigned_parts_and_a_validation_task,
    a_presigned_upload_that_breaks_its_declaration_or_its_format_fails_its_task,
    tasks_are_listed_renamed_and_deleted_by_their_owner_only,
    versions_snapshot_a_dataset_are_uniquely_named_owned_and_go_with_it,
    processing_splits_a_dataset_reproducibly_and_refuses_bad_ratios_and_placeholders,
    quality_checks_find_invalid_incomplete_and_duplicate_records_quickly_and_as_a_task,
);

async fn user(app: &TestApp) -> String {
    app.signed_up().await.0["access_token"].as_str().unwrap().to_string()
}

/// POSTs a dataset form; `fields` are text fields, `file` the file's name and bytes.
async fn upload(
    app: &TestApp,
    token: &str,
    fields: &[(&str, &str)],
    file: Option<(&str, Vec<u8>)>,
) -> (StatusCode, Value) {
    let mut form = Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some((name, bytes)) = file {
        form = form.part("file", Part::bytes(bytes).file_name(name.to_string()));
    }
    let r = app
        .client
        .post(format!("{}/api/v1/datasets", app.url))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

const SUPPORT: &str = "{\"instruction\":\"Reset my password\",\"response\":\"Settings, Security.\"}\n{\"instruction\":\"Invoice?\",\"response\":\"Billing.\",\"lang\":\"en\"}\n";

async fn a_small_dataset_is_validated_on_upload_listed_previewed_and_deleted(b: Backend) {
    let app = crate::support::spawn_app(b).await;
    let (alice, bob) = (user(&app).await, user(&app).await);
    let (a, bb) = (Some(alice.as_str()), Some(bob.as_str()));
    let (s, v) = upload(
        &app,
        &alice,
        &[("name", "Support"), ("type", "instruction"), ("description", "tickets")],
        Some(("support.jsonl", SUPPORT.as_bytes().to_vec())),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let d = &v["data"];
    let id = d["id"].as_str().unwrap().to_string();
    assert_eq!(
        (d["status"].as_str(), d["format"].as_str(), d["samples_count"].as_u64()),
        (Some("ready"), Some("jsonl"), Some(2)),
        "the format comes from the file name: {v}"
    );
    assert_eq!(d["fields"], json!(["instruction", "response", "lang"]));
    assert_eq!(d["size"], SUPPORT.len());
    assert_eq!(d["sha256"], crate::models::sha256_hex(SUPPORT.as_bytes()));

    let csv = "\u{feff}question,answer\n\"Hi, there\",\"line one\nline two\"\nBye,See you\n";
    let (s, v) = upload(
        &app,
        &alice,
        &[("name", "Chat CSV"), ("format", "csv")],
        Some(("chat.txt", csv.into())),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["data"]["fields"],
        json!(["question", "answer"]),
        "the BOM is dropped: {v}"
    );
    let json_array = r#"[{"text": "a"}, {"text": "b"}, {"text": "c"}]"#;
    let (s, v) = upload(
        &app,
        &alice,
        &[("name", "Texts"), ("type", "text")],
        Some(("t.json", json_array.into())),
    )
    .await;
    assert_eq!(
        (s, v["data"]["samples_count"].as_u64()),
        (StatusCode::CREATED, Some(3)),
        "{v}"
    );

    let (_, v) = app.v1(Method::GET, "/api/v1/datasets?format=jsonl", a, None).await;
    assert_eq!(v["data"]["pagination"]["total"], 1, "{v}");
    let (_, v) = app
        .v1(
            Method::GET,
            "/api/v1/datasets?sort=samples_count&order=desc&limit=2",
            a,
            None,
        )
        .await;
    let names: Vec<&str> = v["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!((names.len(), names[0]), (2, "Texts"), "{v}");
    assert_eq!(v["data"]["pagination"]["pages"], 2);
    let (_, v) = app.v1(Method::GET, "/api/v1/datasets?search=TICKETS", a, None).await;
    assert_eq!(v["data"]["items"][0]["id"], id.as_str());
    assert!(v["data"]["items"][0].get("preview").is_none(), "lists carry no preview");

    let (s, v) = app.v1(Method::GET, &format!("/api/v1/datasets/{id}"), a, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["preview"][1]["lang"], "en", "{v}");
    let (_, me) = app.v1(Method::GET, "/api/v1/users/me", a, None).await;
    let used = me["data"]["quota"]["storage_used"].as_u64().unwrap();
    assert!(used >= (SUPPORT.len() + csv.len()) as u64, "{me}");

    for (method, path) in [
        (Method::GET, format!("/api/v1/datasets/{id}")),
        (Method::DELETE, format!("/api/v1/datasets/{id}")),
        (Method::POST, format!("/api/v1/datasets/{id}/complete")),
    ] {
        let body = (method == Method::POST).then(|| json!({"parts": []}));
        let (s, v) = app.v1(method.clone(), &path, bb, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    let (_, v) = app.v1(Method::GET, "/api/v1/datasets", bb, None).await;
    assert_eq!(v["data"]["pagination"]["total"], 0);

    let (s, _) = app.v1(Method::DELETE, &format!("/api/v1/datasets/{id}"), a, None).await;
    assert_eq!(s, 200);
    let (s, _) = app.v1(Method::GET, &format!("/api/v1/datasets/{id}"), a, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, me) = app.v1(Method::GET, "/api/v1/users/me", a, None).await;
    assert_eq!(
        me["data"]["quota"]["storage_used"].as_u64().unwrap(),
        used - SUPPORT.len() as u64,
        "{me}"
    );
}

async fn invalid_files_are_refused_with_their_line_numbers_and_nothing_is_kept(b: Backend) {
    let app = crate::support::spawn_with(b, |c| c.identity.storage_bytes = 1 << 30).await;
    let alice = user(&app).await;
    let cases: [(&str, &[u8], &[u64], &str); 7] = [
        ("a.jsonl", b"{\"a\":1}\n\n{\"a\":2}\n", &[2], "blank line"),
        ("a.jsonl", b"{\"a\":1}\n{\"a\":\"cut", &[2], "cut short"),
        ("a.jsonl", b"{\"a\":1}\n{\"a\":\"\xff\"}\n", &[2], "UTF-8"),
        ("a.csv", b"a,b\n1,2\n1,2,3\n4\n", &[3, 4], "fields"),
        ("a.json", b"[{\"a\":1}, 2, {\"a\":", &[1, 1], "JSON object"),
        ("a.jsonl", b"", &[], "no records"),
        ("a.csv", b"a,b\n", &[], "no records"),
    ];
    for (name, bytes, lines, says) in cases {
        let (s, v) = upload(&app, &alice, &[("name", "bad")], Some((name, bytes.to_vec()))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{name} {bytes:?}: {v}");
        assert_eq!(v["error"]["code"], "VALIDATION_004");
        let found: Vec<u64> = v["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                d["field"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("file:")
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(found, lines, "{name} {bytes:?}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says) || v.to_string().contains(says),
            "{says}: {v}"
        );
    }
    let ok = Some(("a.jsonl", SUPPORT.as_bytes().to_vec()));
    for (fields, status, field) in [
        (vec![], StatusCode::UNPROCESSABLE_ENTITY, "name"),
        (vec![("name", " ")], StatusCode::UNPROCESSABLE_ENTITY, "name"),
        (
            vec![("name", "x"), ("type", "poetry")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "type",
        ),
        (
            vec![("name", "x"), ("format", "xml")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "format",
        ),
        (
            vec![("name", "x"), ("project_id", "nope")],
            StatusCode::NOT_FOUND,
            "project_id",
        ),
    ] {
        let (s, v) = upload(&app, &alice, &fields, ok.clone()).await;
        assert_eq!(
            (s, v["error"]["details"][0]["field"].as_str()),
            (status, Some(field)),
            "{fields:?}: {v}"
        );
    }
    let (s, v) = upload(&app, &alice, &[("name", "x")], None).await;
    assert_eq!(
        (s, v["error"]["details"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("file")),
        "{v}"
    );
    let big = vec![b'x'; 5 << 20];
    let (s, v) = upload(&app, &alice, &[("name", "x")], Some(("big.jsonl", big))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "an oversized form: {v}");
    let r = app
        .client
        .post(format!("{}/api/v1/datasets", app.url))
        .bearer_auth(&alice)
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "not a form, not JSON");
    for body in [
        json!({"name": "x", "format": "jsonl", "size": 0, "sha256": "a".repeat(64)}),
        json!({"name": "x", "format": "jsonl", "size": 10_000_000_001u64, "sha256": "a".repeat(64)}),
        json!({"name": "x", "format": "jsonl", "size": 10, "sha256": "ABC"}),
        json!({"name": "x", "format": "jsonl", "size": "10", "sha256": "a".repeat(64)}),
        json!({"name": "x", "size": 10, "sha256": "a".repeat(64)}),
    ] {
        let (s, v) = app
            .v1(Method::POST, "/api/v1/datasets", Some(&alice), Some(body.clone()))
            .await;
        assert!(s == 400 || s == 422, "{body}: {s} {v}");
    }
    let (s, v) = app
        .v1(
            Method::POST,
            "/api/v1/datasets",
            Some(&alice),
            Some(json!({"name": "x", "format": "jsonl", "size": 9_000_000_000u64, "sha256": "a".repeat(64)})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("RESOURCE_004")),
        "over the quota: {}",
        v["error"]
    );
    let (_, v) = app.v1(Method::GET, "/api/v1/datasets", Some(&alice), None).await;
    assert_eq!(v["data"]["pagination"]["total"], 0, "nothing was kept: {v}");
}

/// Starts a presigned upload of `bytes` as `format`, declaring `sha256`.
async fn start(app: &TestApp, token: &str, format: &str, bytes: &[u8], sha256: &str) -> Value {
    let body = json!({"name": "big", "type": "instruction", "format": format, "size": bytes.len(), "sha256": sha256});
    let (s, v) = app.v1(Method::POST, "/api/v1/datasets", Some(token), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"]["status"], "uploading");
    v["data"].clone()
}

/// PUTs the parts and completes the upload; returns the completion's answer.
async fn send_parts(app: &TestApp, token: &str, d: &Value, bytes: &[u8]) -> (StatusCode, Value) {
    let upload = &d["upload"];
    let size = upload["part_size"].as_u64().unwrap() as usize;
    let mut done = Vec::new();
    for (part, chunk) in upload["parts"].as_array().unwrap().iter().zip(bytes.chunks(size)) {
        let url = part["url"].as_str().unwrap();
        let url = if url.starts_with('/') {
            format!("{}{url}", app.url)
        } else {
            url.to_string()
        };
        let r = reqwest::Client::new()
            .put(url)
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        done.push(json!({"part_number": part["part_number"], "etag": r.headers()["etag"].to_str().unwrap()}));
    }
    let path = upload["complete_url"].as_str().unwrap();
    app.v1(Method::POST, path, Some(token), Some(json!({"parts": done})))
        .await
}

/// Waits (at most two minutes) for a task to finish; returns it.
pub async fn finished(app: &TestApp, token: &str, task: &str) -> Value {
    for _ in 0..1200 {
        let (s, v) = app
            .v1(Method::GET, &format!("/api/v1/tasks/{task}"), Some(token), None)
            .await;
        assert_eq!(s, 200, "{v}");
        if ["completed", "failed", "canceled"].contains(&v["data"]["status"].as_str().unwrap()) {
            return v["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {task} did not finish within two minutes");
}

/// `n` instruction records, in JSONL.
pub fn records(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{{\"instruction\":\"question {i}\",\"response\":\"answer {i}\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

async fn a_large_dataset_goes_through_presigned_parts_and_a_validation_task(b: Backend) {
    let app = crate::support::spawn_app(b).await;
    let alice = user(&app).await;
    let a = Some(alice.as_str());
    // Over one 16 MiB part, so the file is joined from two.
    let bytes = records(400_000);
    assert!(bytes.len() > 16 << 20);
    let d = start(&app, &alice, "jsonl", &bytes, &crate::models::sha256_hex(&bytes)).await;
    assert_eq!(d["upload"]["parts"].as_array().unwrap().len(), 2, "{d}");
    let id = d["id"].as_str().unwrap();
    let (s, v) = send_parts(&app, &alice, &d, &bytes).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["status"], "validating");
    let task = v["data"]["task_id"].as_str().unwrap().to_string();
    let (s, v) = app
        .v1(
            Method::POST,
            &format!("/api/v1/datasets/{id}/complete"),
            a,
            Some(json!({"parts": []})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "completed once only: {v}");

    let t = finished(&app, &alice, &task).await;
    assert_eq!(
        (t["status"].as_str(), t["type"].as_str()),
        (Some("completed"), Some("dataset_validation")),
        "{t}"
    );
    assert_eq!(
        (t["progress"].as_f64(), t["result"]["samples_count"].as_u64()),
        (Some(100.0), Some(400_000))
    );
    let (_, v) = app.v1(Method::GET, &format!("/api/v1/datasets/{id}"), a, None).await;
    assert_eq!(
        (v["data"]["status"].as_str(), v["data"]["samples_count"].as_u64()),
        (Some("ready"), Some(400_000)),
        "{v}"
    );
    assert_eq!(v["data"]["preview"][0]["instruction"], "question 0");
    let (_, logs) = app
        .v1(Method::GET, &format!("/api/v1/tasks/{task}/logs?limit=2"), a, None)
        .await;
    let lines = logs["data"]["items"].as_array().unwrap();
    assert_eq!((lines.len(), lines[0]["line"].as_u64()), (2, Some(1)), "{logs}");
    assert!(logs["data"]["pagination"]["total"].as_u64().unwrap() >= 3, "{logs}");
    let (_, page2) = app
        .v1(
            Method::GET,
            &format!("/api/v1/tasks/{task}/logs?limit=2&page=2"),
            a,
            None,
        )
        .await;
    assert_eq!(page2["data"]["items"][0]["line"], 3, "{page2}");
    let (_, me) = app.v1(Method::GET, "/api/v1/users/me", a, None).await;
    assert!(
        me["data"]["quota"]["storage_used"].as_u64().unwrap() >= bytes.len() as u64,
        "{me}"
    );
}

async fn a_presigned_upload_that_breaks_its_declaration_or_its_format_fails_its_task(b: Backend) {
    let app = crate::support::spawn_app(b).await;
    let alice = user(&app).await;
    let a = Some(alice.as_str());
    let mut bad = records(3);
    bad.extend_from_slice(b"not json\n{\"instruction\":\"x\"}\n\n");
    let wrong_sha = "0".repeat(64);
    for (bytes, sha, says) in [
        (
            bad.clone(),
            crate::models::sha256_hex(&bad),
            "2 invalid record(s); the first: line 4",
        ),
        (records(2), wrong_sha, "sha256"),
    ] {
        let d = start(&app, &alice, "jsonl", &bytes, &sha).await;
        let (s, v) = send_parts(&app, &alice, &d, &bytes).await;
        assert_eq!(s, 200, "{v}");
        let t = finished(&app, &alice, v["data"]["task_id"].as_str().unwrap()).await;
        assert_eq!(t["status"], "failed", "{t}");
        assert!(t["error"].as_str().unwrap().contains(says), "{says}: {t}");
        let (_, v) = app
            .v1(
                Method::GET,
                &format!("/api/v1/datasets/{}", d["id"].as_str().unwrap()),
                a,
                None,
            )
            .await;
        assert_eq!(v["data"]["status"], "failed", "{v}");
        assert!(v["data"]["error"].as_str().unwrap().contains(says), "{v}");
    }
    let (_, v) = app.v1(Method::GET, "/api/v1/datasets?status=failed", a, None).await;
    let first = v["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["error_count"] == 2)
        .cloned()
        .unwrap();
    let lines: Vec<u64> = first["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 6], "{first}");
    let (_, me) = app.v1(Method::GET, "/api/v1/users/me", a, None).await;
    assert_eq!(
        me["data"]["quota"]["storage_used"], 0,
        "failed uploads take no storage: {me}"
    );

    // A part left out, or a wrong ETag: the client's to fix, and the upload stays open.
    let bytes = records(400_000);
    let d = start(&app, &alice, "jsonl", &bytes, &crate::models::sha256_hex(&bytes)).await;
    let complete = d["upload"]["complete_url"].as_str().unwrap();
    let (s, v) = app
        .v1(
            Method::POST,
            complete,
            a,
            Some(json!({"parts": [{"part_number": 1, "etag": "\"0000\""}]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["details"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("parts")),
        "{v}"
    );
    let (s, v) = send_parts(&app, &alice, &d, &bytes).await;
    assert_eq!(s, 200, "the upload was still open: {v}");
}

async fn tasks_are_listed_renamed_and_deleted_by_their_owner_only(b: Backend) {
    let app = crate::support::spawn_app(b).await;
    let (alice, bob) = (user(&app).await, user(&app).await);
    let (a, bb) = (Some(alice.as_str()), Some(bob.as_str()));
    let bytes = records(10);
    let d = start(&app, &alice, "jsonl", &bytes, &crate::models::sha256_hex(&bytes)).await;
    let (_, v) = send_parts(&app, &alice, &d, &bytes).await;
    let task = v["data"]["task_id"].as_str().unwrap().to_string();
    finished(&app, &alice, &task).await;
    let path = format!("/api/v1/tasks/{task}");

    let (_, v) = app
        .v1(
            Method::GET,
            "/api/v1/tasks?type=dataset_validation&status=completed",
            a,
            None,
        )
        .await;
    assert_eq!(v["data"]["items"][0]["id"], task.as_str(), "{v}");
    let (_, v) = app.v1(Method::GET, "/api/v1/tasks?status=running", a, None).await;
    assert_eq!(v["data"]["pagination"]["total"], 0, "{v}");
    let (s, v) = app.v1(Method::GET, "/api/v1/tasks?status=sleeping", a, None).await;
    assert!(s == 400 || s == 422, "{v}");

    for (method, p) in [
        (Method::GET, path.clone()),
        (Method::PUT, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::GET, format!("{path}/logs")),
    ] {
        let body = (method == Method::PUT).then(|| json!({"name": "mine"}));
        let (s, v) = app.v1(method.clone(), &p, bb, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {p}: {v}");
    }
    let (s, v) = app
        .v1(Method::PUT, &path, a, Some(json!({"name": "nightly check"})))
        .await;
    assert_eq!(
        (s, v["data"]["name"].as_str()),
        (StatusCode::OK, Some("nightly check")),
        "{v}"
    );
    for body in [json!({"name": ""}), json!({"status": "running"}), json!({"name": 5})] {
        let (s, v) = app.v1(Method::PUT, &path, a, Some(body.clone())).await;
        assert!(s == 400 || s == 422, "{body}: {v}");
    }
    let (s, v) = app.v1(Method::PUT, &path, a, Some(json!({"status": "canceled"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "a finished task cannot be canceled: {v}");
    let (s, _) = app.v1(Method::DELETE, &path, a, None).await;
    assert_eq!(s, 200);
    let (s, _) = app.v1(Method::GET, &format!("{path}/logs"), a, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A ready dataset from a form upload of `n` instruction records; its id.
async fn ready(app: &TestApp, token: &str, n: usize) -> String {
    let (s, v) = upload(
        app,
        token,
        &[("name", "qa"), ("type", "instruction")],
        Some(("qa.jsonl", records(n))),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["data"]["id"].as_str().unwrap().to_string()
}

async fn versions_snapshot_a_dataset_are_uniquely_named_owned_and_go_with_it(b: Backend) {
    let app = crate::support::spawn_app(b).await;
    let (alice, bob) = (user(&app).await, user(&app).await);
    let (a, bb) = (Some(alice.as_str()), Some(bob.as_str()));
    let id = ready(&app, &alice, 5).await;
    let new = |body: Value| app.v1(Method::POST, "/api/v1/datasets/versions", a, Some(body));
    let (s, v1) = new(json!({"dataset_id": id, "description": "first"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v1}");
    assert_eq!(
        (v1["data"]["version"].as_str(), v1["data"]["samples_count"].as_u64()),
        (Some("v1"), Some(5))
    );
    assert_eq!(v1["data"]["files"][0]["split"], "all");
    let (_, v2) = new(json!({"dataset_id": id})).await;
    assert_eq!(v2["data"]["version"], "v2");
    let (s, v) = new(json!({"dataset_id": id, "version": "v1"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = new(json!({"dataset_id": id, "version": "a b"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = new(json!({"version": "v9"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let vid = v1["data"]["id"].as_str().unwrap().to_string();
    let (s, v) = app
        .v1(
            Method::POST,
            "/api/v1/datasets/versions",
            bb,
            Some(json!({"dataset_id": id})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another user's dataset: {v}");
    for method in [Method::GET, Method::DELETE] {
        let (s, _) = app
            .v1(method, &format!("/api/v1/datasets/versions/{vid}"), bb, None)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let (_, list) = app
        .v1(
            Method::GET,
            &format!("/api/v1/datasets/versions?dataset_id={id}"),
            a,
            None,
        )
        .await;
    assert_eq!(list["data"]["pagination"]["total"], 2, "{list}");
    assert_eq!(list["data"]["items"][0]["version"], "v2", "newest first");
    let (s, _) = app
        .v1(Method::DELETE, &format!("/api/v1/datasets/versions/{vid}"), a, None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .v1(Method::GET, &format!("/api/v1/datasets/versions/{vid}"), a, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.v1(Method::DELETE, &format!("/api/v1/datasets/{id}"), a, None).await;
    assert_eq!(s, 200);
    let (_, list) = app.v1(Method::GET, "/api/v1/datasets/versions", a, None).await;
    assert_eq!(
        list["data"]["pagination"]["total"], 0,
        "a dataset's versions go with it: {list}"
    );
}

async fn processing_splits_a_dataset_reproducibly_and_refuses_bad_ratios_and_placeholders(b: Backend) {
    let app = crate::support::spawn_app(b).await;
    let alice = user(&app).await;
    let a = Some(alice.as_str());
    let id = ready(&app, &alice, 1000).await;
    let template = "### Q:\n{instruction}\n### A:\n{response}";
    let process = |name: &str, seed: u64| {
        let body = json!({"dataset_id": id, "output_name": name, "train_ratio": 0.8, "val_ratio": 0.1, "test_ratio": 0.1, "template": template, "seed": seed});
        app.v1(Method::POST, "/api/v1/datasets/process", a, Some(body))
    };
    let (s, p) = process("run-a", 7).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["data"]["status"], "completed", "{p}");
    assert_eq!(
        p["data"]["splits"],
        json!({"train": 800, "validation": 100, "test": 100})
    );
    let version = p["data"]["output_path"].as_str().unwrap().to_string();
    let (_, v) = app.v1(Method::GET, &version, a, None).await;
    assert_eq!(
        (v["data"]["status"].as_str(), v["data"]["format"].as_str()),
        (Some("ready"), Some("jsonl")),
        "{v}"
    );
    assert!(v["data"]["fields"].as_array().unwrap().contains(&json!("text")), "{v}");
    let sizes = |v: &Value| {
        v["data"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["size"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let (_, again) = process("run-b", 7).await;
    let (_, other) = process("run-c", 8).await;
    let (_, vb) = app
        .v1(Method::GET, again["data"]["output_path"].as_str().unwrap(), a, None)
        .await;
    let (_, vc) = app
        .v1(Method::GET, other["data"]["output_path"].as_str().unwrap(), a, None)
        .await;
    assert_eq!(sizes(&v), sizes(&vb), "the same seed deals the same records");
    assert_ne!(sizes(&v), sizes(&vc), "another seed deals others");
    let (_, q) = app
        .v1(
            Method::GET,
            &format!(
                "/api/v1/datasets/quality/quick?dataset_id={id}&version_id={}&sample=1000",
                v["data"]["id"].as_str().unwrap()
            ),
            a,
            None,
        )
        .await;
    assert_eq!(q["data"]["cross_split"]["count"], 0, "{q}");
    assert_eq!(q["data"]["samples_checked"], 1000, "{q}");

    for (body, field) in [
        (
            json!({"dataset_id": id, "output_name": "x", "train_ratio": 0.8, "val_ratio": 0.1, "test_ratio": 0.2}),
            "train_ratio",
        ),
        (
            json!({"dataset_id": id, "output_name": "x", "template": "{question} {response}"}),
            "template",
        ),
        (
            json!({"dataset_id": id, "output_name": "x", "template": "{unclosed"}),
            "template",
        ),
        (json!({"dataset_id": id, "output_name": "no spaces"}), "output_name"),
        (json!({"dataset_id": id}), "output_name"),
    ] {
        let (s, v) = app
            .v1(Method::POST, "/api/v1/datasets/process", a, Some(body.clone()))
            .await;
        assert_eq!(
            (s, v["error"]["details"][0]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}: {v}"
        );
    }
    let (s, v) = process("run-a", 1).await;
    assert_eq!(s, StatusCode::CONFLICT, "the name is taken: {v}");
    let (_, list) = app
        .v1(
            Method::GET,
            &format!("/api/v1/datasets/versions?dataset_id={id}"),
            a,
            None,
        )
        .await;
    assert_eq!(
        list["data"]["pagination"]["total"], 3,
        "nothing written for refused calls: {list}"
    );
    let (s, v) = app.v1(Method::DELETE, &format!("/api/v1/datasets/{id}"), a, None).await;
    assert_eq!(s, 200, "{v}");
    let (_, me) = app.v1(Method::GET, "/api/v1/users/me", a, None).await;
    assert_eq!(
        me["data"]["quota"]["storage_used"], 0,
        "splits' bytes are given back: {me}"
    );
}

async fn quality_checks_find_invalid_incomplete_and_duplicate_records_quickly_and_as_a_task(b: Backend) {
    let (app, alice) = crate::openai::llm_app(b).await;
    let a = Some(alice.as_str());
    let text = concat!(
        "{\"instruction\":\"Reset my password\",\"response\":\"Open Settings.\"}\n",
        "{\"instruction\":\"Reset my password\",\"response\":\"Open Settings.\"}\n",
        "{\"instruction\":\"reset  MY password\",\"response\":\"open settings.\"}\n",
        "{\"instruction\":\"Where is my invoice?\",\"response\":\"\"}\n",
        "{\"instruction\":\"Cancel my plan, please, and tell me what happens to my data afterwards\",\"response\":\"It ends with the period.\"}\n",
    );
    let (s, v) = upload(
        &app,
        &alice,
        &[("name", "support"), ("type", "instruction")],
        Some(("s.jsonl", text.into())),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let model = crate::openai::MODEL;
    let (s, q) = app
        .v1(
            Method::GET,
            &format!("/api/v1/datasets/quality/quick?dataset_id={id}&model={model}"),
            a,
            None,
        )
        .await;
    assert_eq!(s, 200, "{q}");
    let r = &q["data"];
    assert_eq!(r["samples_checked"], 5);
    assert_eq!(r["exact_duplicates"]["lines"][0]["line"], 2, "{r}");
    assert_eq!(r["near_duplicates"]["lines"][0]["line"], 3, "{r}");
    assert_eq!(
        r["missing_fields"]["lines"][0],
        json!({"line": 4, "message": "response is empty"})
    );
    let t = &r["token_lengths"];
    let in_buckets: u64 = t["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(in_buckets, 5, "{t}");
    assert!(t["max"].as_u64().unwrap() > t["min"].as_u64().unwrap(), "{t}");
    assert_eq!(
        (t["context"].as_u64(), t["over_context"].as_u64()),
        (Some(8192), Some(0)),
        "{t}"
    );
    assert_eq!(r["score"], 40.0, "lines 1 and 5 are clean: {r}");

    let (s, t) = app
        .v1(
            Method::POST,
            "/api/v1/datasets/quality/check",
            a,
            Some(json!({"dataset_id": id, "model": model})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let task = finished(&app, &alice, t["data"]["id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "completed", "{task}");
    let full = &task["result"];
    for k in [
        "samples_checked",
        "exact_duplicates",
        "near_duplicates",
        "missing_fields",
        "token_lengths",
        "score",
    ] {
        assert_eq!(
            floats(&full[k]),
            floats(&r[k]),
            "{k}: the task reads the whole file, here the same records"
        );
    }
    assert_eq!(
        (full["sampled"].as_bool(), r["sampled"].as_bool()),
        (Some(false), Some(false))
    );

    for (query, status) in [
        (format!("dataset_id={id}&model=no-such-model"), StatusCode::NOT_FOUND),
        (
            format!("dataset_id={id}&model={}", crate::openai::EMBEDDER),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (format!("dataset_id={id}&sample=0"), StatusCode::UNPROCESSABLE_ENTITY),
        ("dataset_id=missing".to_string(), StatusCode::NOT_FOUND),
        ("model=x".to_string(), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (s, v) = app
            .v1(Method::GET, &format!("/api/v1/datasets/quality/quick?{query}"), a, None)
            .await;
        assert_eq!(s, status, "{query}: {v}");
    }
    let bob = user(&app).await;
    let (s, _) = app
        .v1(
            Method::GET,
            &format!("/api/v1/datasets/quality/quick?dataset_id={id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another user's dataset");
}

/// `v` with every number as a float: DynamoDB keeps `40.0` as `40`.
fn floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(floats).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), floats(v))).collect()),
        v => v.clone(),
    }
}
