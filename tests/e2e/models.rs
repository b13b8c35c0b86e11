//! The model registry over HTTP on both backends (seed 003 §4): uploads as forms, versions,
//! downloads through expiring URLs, likes, clones, visibility, lists with filters, sorts and
//! cursors, the built-in models, and bad uploads refused with nothing written.

use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{spawn_app, spawn_with, Backend, TestApp};

on_both_backends!(
    a_model_uploaded_as_a_form_is_read_versioned_downloaded_and_deleted,
    others_see_public_models_only_and_cannot_change_them_but_may_like_and_clone,
    lists_filter_sort_and_page_through_cursors_without_gaps_or_repeats,
    bad_uploads_get_clear_errors_and_leave_nothing_behind,
    the_built_in_models_are_public_platform_models_with_metadata_from_their_files,
    a_large_model_uploaded_in_presigned_parts_is_deployed_and_answers,
    completions_that_do_not_match_the_declaration_fail_the_version,
    uploads_past_the_storage_quota_are_refused_before_any_byte_moves,
    sgt_models_are_in_the_registry_under_the_sgt_apis_rules,
);

/// A GGUF v3 file: `general.architecture = llama`, `llama.context_length = 4096`, and one f32
/// tensor of `n` values, laid out exactly as its header declares.
fn gguf(n: u64) -> Vec<u8> {
    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(2u64.to_le_bytes());
    string(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    string(&mut b, "llama");
    string(&mut b, "llama.context_length");
    b.extend(4u32.to_le_bytes());
    b.extend(4096u32.to_le_bytes());
    string(&mut b, "output_norm.weight");
    b.extend(1u32.to_le_bytes());
    b.extend(n.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32, 0);
    for i in 0..n {
        b.extend((i as f32).to_le_bytes());
    }
    b
}

fn model_form(name: &str, fields: &[(&str, &str)], file: Option<Vec<u8>>) -> Form {
    let mut form = Form::new().text("name", name.to_string()).text("type", "llm");
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some(bytes) = file {
        form = form.part("model_file", Part::bytes(bytes).file_name("model.gguf"));
    }
    form
}

async fn send_form(app: &TestApp, path: &str, token: &str, form: Form) -> (StatusCode, Value) {
    let r = app
        .client
        .post(format!("{}{path}", app.url))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: {status} {text}")),
    )
}

async fn upload(app: &TestApp, token: &str, name: &str, fields: &[(&str, &str)]) -> Value {
    let (s, v) = send_form(app, "/api/v1/models", token, model_form(name, fields, Some(gguf(8)))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["data"].clone()
}

async fn user(app: &TestApp) -> String {
    app.signed_up().await.0["access_token"].as_str().unwrap().to_string()
}

/// Follows a download: the redirect, then the URL it names, without credentials.
async fn download(app: &TestApp, token: &str, path: &str) -> (StatusCode, Option<Vec<u8>>) {
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::FOUND {
        return (r.status(), None);
    }
    let to = r.headers()["location"].to_str().unwrap().to_string();
    let url = if to.starts_with('/') {
        format!("{}{to}", app.url)
    } else {
        to
    };
    let got = plain.get(url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    (StatusCode::FOUND, Some(got.bytes().await.unwrap().to_vec()))
}

async fn a_model_uploaded_as_a_form_is_read_versioned_downloaded_and_deleted(b: Backend) {
    let app = spawn_app(b).await;
    let token = user(&app).await;
    let t = Some(token.as_str());
    let fields = [
        ("description", "A tiny llama"),
        ("category", "text-generation"),
        ("license", "MIT"),
        ("tags", r#"["tiny", "Llama"]"#),
    ];
    let m = upload(&app, &token, "Tiny", &fields).await;
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(
        (m["visibility"].as_str(), m["latest_version"].as_str()),
        (Some("private"), Some("1.0.0"))
    );
    assert_eq!(m["tags"], json!(["tiny", "llama"]));
    assert_eq!(m["metadata"]["parameters_count"], 8, "{m}");
    assert_eq!(m["metadata"]["model_format"], "gguf");
    assert_eq!(m["metadata"]["context_length"], 4096);
    assert!(
        m["metadata"]["hardware_requirements"]["min_memory_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(m["versions"][0]["status"], "ready");
    assert_eq!(m["versions"][0]["file_size"], gguf(8).len());
    assert_eq!(m["usage_examples"][0]["request"]["body"]["model"], id.as_str());

    let (s, v) = send_form(
        &app,
        &format!("/api/v1/models/{id}/versions"),
        &token,
        Form::new()
            .text("version", "1.1.0")
            .text("description", "Bigger")
            .part("model_file", Part::bytes(gguf(16)).file_name("m.gguf")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let again = Form::new()
        .text("version", "1.1.0")
        .part("model_file", Part::bytes(gguf(4)).file_name("m.gguf"));
    let (s, v) = send_form(&app, &format!("/api/v1/models/{id}/versions"), &token, again).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("RESOURCE_002")),
        "{v}"
    );
    let (s, v) = app
        .v1(Method::GET, &format!("/api/v1/models/{id}/versions"), t, None)
        .await;
    assert_eq!(s, 200);
    let versions: Vec<&str> = v["data"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.1.0", "1.0.0"], "newest first");
    let (_, v) = app.v1(Method::GET, &format!("/api/v1/models/{id}"), t, None).await;
    assert_eq!(v["data"]["latest_version"], "1.1.0");
    assert_eq!(
        v["data"]["metadata"]["parameters_count"], 16,
        "the latest version's files"
    );

    let (s, bytes) = download(&app, &token, &format!("/api/v1/models/{id}/versions/1.0.0/download")).await;
    assert_eq!((s, bytes), (StatusCode::FOUND, Some(gguf(8))));
    let (s, _) = download(&app, &token, &format!("/api/v1/models/{id}/versions/9.9.9/download")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = app.v1(Method::GET, &format!("/api/v1/models/{id}"), t, None).await;
    assert_eq!(v["data"]["download_count"], 1);

    let (s, v) = app
        .v1(
            Method::PUT,
            &format!("/api/v1/models/{id}"),
            t,
            Some(json!({"description": "Renamed", "name": "Tiny 2"})),
        )
        .await;
    assert_eq!((s, v["data"]["name"].as_str()), (StatusCode::OK, Some("Tiny 2")), "{v}");
    let (s, _) = app.v1(Method::DELETE, &format!("/api/v1/models/{id}"), t, None).await;
    assert_eq!(s, 200);
    let (s, _) = app.v1(Method::GET, &format!("/api/v1/models/{id}"), t, None).await;
    assert_eq!(s, 404);
    let (_, v) = app.v1(Method::GET, "/api/v1/models", t, None).await;
    assert_eq!(v["data"]["pagination"]["total"], 0, "{v}");
}

async fn others_see_public_models_only_and_cannot_change_them_but_may_like_and_clone(b: Backend) {
    let app = spawn_app(b).await;
    let (alice, bob) = (user(&app).await, user(&app).await);
    let (a, bb) = (Some(alice.as_str()), Some(bob.as_str()));
    let private = upload(&app, &alice, "Secret", &[]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let public = upload(&app, &alice, "Shared", &[("visibility", "public")]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (method, path) in [
        (Method::GET, format!("/api/v1/models/{private}")),
        (Method::GET, format!("/api/v1/models/{private}/versions")),
        (Method::GET, format!("/api/v1/models/{private}/versions/1.0.0/download")),
        (Method::POST, format!("/api/v1/models/{private}/like")),
        (Method::POST, format!("/api/v1/models/{private}/clone")),
        (Method::PUT, format!("/api/v1/models/{private}")),
        (Method::DELETE, format!("/api/v1/models/{private}")),
    ] {
        let body = (method == Method::PUT).then(|| json!({"name": "mine"}));
        let (s, v, _) = app.call(method.clone(), &path, bb, body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("RESOURCE_001")),
            "{method} {path}: {v}"
        );
    }
    let (_, v) = app.v1(Method::GET, "/api/v1/models", bb, None).await;
    let ids: Vec<&str> = v["data"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [public.as_str()], "{v}");
    assert_eq!(
        v["data"]["models"][0]["owner"]["username"]
            .as_str()
            .map(|u| u.starts_with('u')),
        Some(true)
    );
    let (s, _) = app
        .v1(
            Method::PUT,
            &format!("/api/v1/models/{public}"),
            bb,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .v1(Method::DELETE, &format!("/api/v1/models/{public}"), bb, None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    for _ in 0..2 {
        let (s, v) = app
            .v1(Method::POST, &format!("/api/v1/models/{public}/like"), bb, None)
            .await;
        assert_eq!(
            (s, v["data"]["like_count"].as_u64()),
            (StatusCode::OK, Some(1)),
            "liking twice counts once: {v}"
        );
    }
    let (_, v) = app
        .v1(Method::POST, &format!("/api/v1/models/{public}/like"), a, None)
        .await;
    assert_eq!(v["data"]["like_count"], 2);
    let (_, v) = app
        .v1(Method::DELETE, &format!("/api/v1/models/{public}/like"), bb, None)
        .await;
    assert_eq!(
        (v["data"]["like_count"].as_u64(), v["data"]["liked"].as_bool()),
        (Some(1), Some(false))
    );

    let (s, v) = app
        .v1(
            Method::POST,
            &format!("/api/v1/models/{public}/clone"),
            bb,
            Some(json!({"name": "Bob's copy"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let copy = v["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (v["data"]["visibility"].as_str(), v["data"]["cloned_from"].as_str()),
        (Some("private"), Some(public.as_str()))
    );
    // The copy has its own files: deleting the original leaves them.
    let (s, _) = app
        .v1(Method::DELETE, &format!("/api/v1/models/{public}"), a, None)
        .await;
    assert_eq!(s, 200);
    let (s, bytes) = download(&app, &bob, &format!("/api/v1/models/{copy}/versions/1.0.0/download")).await;
    assert_eq!((s, bytes), (StatusCode::FOUND, Some(gguf(8))));
    let (s, _) = app.v1(Method::GET, &format!("/api/v1/models/{copy}"), a, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the copy is private to its owner");
}

async fn lists_filter_sort_and_page_through_cursors_without_gaps_or_repeats(b: Backend) {
    let app = spawn_app(b).await;
    let token = user(&app).await;
    let t = Some(token.as_str());
    let names = ["delta", "Alpha", "echo", "charlie", "bravo", "golf", "foxtrot"];
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let visibility = if i % 2 == 0 { "public" } else { "private" };
        let category = if i < 3 { "chat" } else { "code" };
        let fields = [
            ("visibility", visibility),
            ("category", category),
            ("tags", if i == 4 { "needle" } else { "hay" }),
        ];
        ids.push(
            upload(&app, &token, name, &fields).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let list = |q: String| {
        let app = &app;
        async move {
            let (s, v) = app.v1(Method::GET, &format!("/api/v1/models?{q}"), t, None).await;
            assert_eq!(s, 200, "{q}: {v}");
            v["data"].clone()
        }
    };
    let names_of = |d: &Value| -> Vec<String> {
        d["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };

    let all = list("sort=name&order=asc&limit=100".into()).await;
    assert_eq!(
        names_of(&all),
        ["Alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"],
        "names sort ignoring case"
    );
    assert_eq!(all["pagination"]["total"], 7);
    let newest = list("limit=1".into()).await;
    assert_eq!(names_of(&newest), ["foxtrot"], "newest first by default");

    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let q = match &cursor {
            Some(c) => format!("sort=name&order=desc&limit=3&cursor={c}"),
            None => "sort=name&order=desc&limit=3".into(),
        };
        let page = list(q).await;
        seen.extend(names_of(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["golf", "foxtrot", "echo", "delta", "charlie", "bravo", "Alpha"]);
    let page2 = list("sort=name&order=desc&limit=3&page=2".into()).await;
    assert_eq!(
        names_of(&page2),
        ["delta", "charlie", "bravo"],
        "page numbers without a cursor"
    );
    assert_eq!(
        (page2["pagination"]["pages"].as_u64(), page2["count"].as_u64()),
        (Some(3), Some(3))
    );

    let code = list("category=code&sort=name&order=asc".into()).await;
    assert_eq!(names_of(&code), ["bravo", "charlie", "foxtrot", "golf"]);
    assert_eq!(code["pagination"]["total"], 4, "totals count what the filter keeps");
    assert_eq!(
        names_of(&list("search=NEEDLE".into()).await),
        ["bravo"],
        "search looks in tags"
    );
    assert_eq!(names_of(&list("search=alp".into()).await), ["Alpha"], "and in names");
    let private = list("visibility=private&sort=name&order=asc".into()).await;
    assert_eq!(names_of(&private), ["Alpha", "charlie", "golf"]);
    assert!(names_of(&list("type=embedding".into()).await).is_empty());

    let other = user(&app).await;
    app.v1(
        Method::POST,
        &format!("/api/v1/models/{}/like", ids[2]),
        Some(other.as_str()),
        None,
    )
    .await;
    let liked = list("sort=like_count&limit=1".into()).await;
    assert_eq!(names_of(&liked), ["echo"]);
    assert_eq!(liked["models"][0]["like_count"], 1);

    for bad in [
        "sort=size",
        "order=up",
        "visibility=friends",
        "limit=0",
        "limit=101",
        "page=0",
        "cursor=%%%",
        "page=x",
    ] {
        let (s, v) = app.v1(Method::GET, &format!("/api/v1/models?{bad}"), t, None).await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {v}"
        );
        assert!(
            v["error"]["code"].as_str().unwrap().starts_with("VALIDATION_"),
            "{bad}: {v}"
        );
    }
    let (s, _) = app
        .v1(
            Method::PUT,
            &format!("/api/v1/models/{}", ids[0]),
            t,
            Some(json!({"category": "code"})),
        )
        .await;
    assert_eq!(s, 200);
    let totals = (
        list("category=code".into()).await,
        list("category=chat&type=llm".into()).await,
    );
    assert_eq!(
        (
            totals.0["pagination"]["total"].as_u64(),
            totals.1["pagination"]["total"].as_u64()
        ),
        (Some(5), Some(2)),
        "counters follow a change"
    );
    let c = list("sort=name&limit=1".into()).await["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = app
        .v1(
            Method::GET,
            &format!("/api/v1/models?sort=like_count&cursor={c}"),
            t,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a cursor of another sort: {v}");
}

async fn bad_uploads_get_clear_errors_and_leave_nothing_behind(b: Backend) {
    let app = spawn_app(b).await;
    let token = user(&app).await;
    let t = Some(token.as_str());
    let mut truncated = gguf(64);
    truncated.truncate(truncated.len() - 4);
    let safetensors = {
        let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend(header);
        b.extend([0u8; 8]);
        b
    };
    let cases: Vec<(&str, Form, StatusCode, &str)> = vec![
        (
            "no file",
            model_form("m", &[], None),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_001",
        ),
        (
            "not a model",
            model_form("m", &[], Some(b"just some text".to_vec())),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_004",
        ),
        (
            "truncated",
            model_form("m", &[], Some(truncated)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_004",
        ),
        (
            "safetensors without config",
            model_form("m", &[], Some(safetensors)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_004",
        ),
        (
            "bad version",
            model_form("m", &[("version", "v1")], Some(gguf(4))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_003",
        ),
        (
            "bad type",
            Form::new().text("name", "m").text("type", "toaster"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_003",
        ),
        (
            "bad visibility",
            model_form("m", &[("visibility", "friends")], Some(gguf(4))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_003",
        ),
        (
            "tags not a list",
            model_form("m", &[("tags", "[1, 2]")], Some(gguf(4))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_003",
        ),
        (
            "no name",
            Form::new().text("type", "llm"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_001",
        ),
        (
            "name as a file",
            Form::new()
                .part("name", Part::bytes(b"x".to_vec()).file_name("n"))
                .text("type", "llm"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_002",
        ),
        (
            "too large",
            model_form("m", &[], Some(vec![0u8; 5 << 20])),
            StatusCode::BAD_REQUEST,
            "VALIDATION_003",
        ),
    ];
    for (what, form, status, code) in cases {
        let (s, v) = send_form(&app, "/api/v1/models", &token, form).await;
        assert_eq!((s, v["error"]["code"].as_str()), (status, Some(code)), "{what}: {v}");
    }
    let (s, v) = app
        .v1(Method::POST, "/api/v1/models", t, Some(json!({"name": "m", "type": 3})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let r = app
        .client
        .post(format!("{}/api/v1/models", app.url))
        .bearer_auth(&token)
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\nnot a part")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (_, v) = app.v1(Method::GET, "/api/v1/models", t, None).await;
    assert_eq!(v["data"]["pagination"]["total"], 0, "nothing half-made: {v}");
    assert!(
        app.repo().blobs.list("models/").await.unwrap().is_empty(),
        "no files left"
    );

    let (s, v) = app
        .v1(
            Method::POST,
            "/api/v1/models",
            t,
            Some(json!({"name": "described", "type": "llm"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["data"]["versions"],
        json!([]),
        "a model described in JSON has no version yet"
    );
    let id = v["data"]["id"].as_str().unwrap();
    let (s, v) = app
        .v1(
            Method::POST,
            &format!("/api/v1/models/{id}/versions"),
            t,
            Some(json!({"version": "1.0.0"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

async fn the_built_in_models_are_public_platform_models_with_metadata_from_their_files(b: Backend) {
    let (app, token) = crate::openai::llm_app(b).await;
    let t = Some(token.as_str());
    let (_, v) = app.v1(Method::GET, "/api/v1/models?type=llm", t, None).await;
    let llm = &v["data"]["models"][0];
    assert_eq!(
        (llm["id"].as_str(), llm["owner"]["id"].as_str()),
        (Some(crate::openai::MODEL), Some("maas")),
        "{v}"
    );
    let (_, d) = app
        .v1(
            Method::GET,
            &format!("/api/v1/models/{}", crate::openai::MODEL),
            t,
            None,
        )
        .await;
    let meta = &d["data"]["metadata"];
    let params = meta["parameters_count"].as_u64().unwrap();
    assert!((130_000_000..140_000_000).contains(&params), "SmolLM2-135M: {params}");
    assert_eq!(
        (meta["model_format"].as_str(), meta["context_length"].as_u64()),
        (Some("gguf"), Some(8192))
    );
    let (_, v) = app.v1(Method::GET, "/api/v1/models?type=embedding", t, None).await;
    let e = &v["data"]["models"][0];
    assert_eq!(e["id"], crate::openai::EMBEDDER);
    let (_, d) = app
        .v1(
            Method::GET,
            &format!("/api/v1/models/{}", crate::openai::EMBEDDER),
            t,
            None,
        )
        .await;
    let params = d["data"]["metadata"]["parameters_count"].as_u64().unwrap();
    assert!((22_000_000..23_000_000).contains(&params), "all-MiniLM-L6-v2: {params}");
    let (s, _) = app
        .v1(
            Method::DELETE,
            &format!("/api/v1/models/{}", crate::openai::MODEL),
            t,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "built-ins are the platform's");
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// PUTs each part of `bytes` to its URL, without credentials, and returns the completion body.
async fn put_parts(app: &TestApp, upload: &Value, field: &str, bytes: &[u8]) -> Value {
    let file = upload["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == field)
        .unwrap();
    let size = file["part_size"].as_u64().unwrap() as usize;
    let mut done = Vec::new();
    for (part, chunk) in file["parts"].as_array().unwrap().iter().zip(bytes.chunks(size)) {
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
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        done.push(json!({"part_number": part["part_number"], "etag": etag}));
    }
    json!({"field": field, "parts": done})
}

async fn a_large_model_uploaded_in_presigned_parts_is_deployed_and_answers(b: Backend) {
    let app = spawn_app(b).await;
    let token = user(&app).await;
    let t = Some(token.as_str());
    let gguf = std::fs::read(crate::openai::models_dir().join("smollm2-135m-instruct/model.gguf")).unwrap();
    let body = json!({"name": "SmolLM2 of mine", "type": "llm", "version": "0.1.0",
        "files": [{"field": "model_file", "size": gguf.len(), "sha256": sha256_hex(&gguf), "format": "gguf"}]});
    let (s, v) = app.v1(Method::POST, "/api/v1/models", t, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let upload = v["data"]["upload"].clone();
    assert_eq!(upload["status"], "uploading");
    assert!(upload["files"][0]["parts"].as_array().unwrap().len() > 1, "{upload}");
    let (_, d) = app.v1(Method::GET, &format!("/api/v1/models/{id}"), t, None).await;
    assert_eq!(
        (
            d["data"]["versions"][0]["status"].as_str(),
            d["data"]["latest_version"].as_str()
        ),
        (Some("uploading"), None)
    );

    let done = json!({"files": [put_parts(&app, &upload, "model_file", &gguf).await]});
    let complete = upload["complete_url"].as_str().unwrap();
    let (s, v) = app.v1(Method::POST, complete, t, Some(done.clone())).await;
    assert_eq!(
        (s, v["data"]["status"].as_str()),
        (StatusCode::OK, Some("validating")),
        "{v}"
    );
    let (s, _) = app.v1(Method::POST, complete, t, Some(done)).await;
    assert_eq!(s, StatusCode::CONFLICT, "a version completes once");
    let task = crate::datasets::finished(&app, &token, v["data"]["task_id"].as_str().unwrap()).await;
    assert_eq!(
        (task["status"].as_str(), task["type"].as_str()),
        (Some("completed"), Some("model_validation")),
        "{task}"
    );
    let (_, d) = app.v1(Method::GET, &format!("/api/v1/models/{id}"), t, None).await;
    assert_eq!(d["data"]["latest_version"], "0.1.0");
    let params = d["data"]["metadata"]["parameters_count"].as_u64().unwrap();
    assert!((130_000_000..140_000_000).contains(&params), "{params}");

    let (s, dep) = app
        .v1(
            Method::POST,
            "/api/v1/inference/deployments",
            t,
            Some(json!({"name": "mine", "model_id": id})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{dep}");
    assert_eq!(dep["data"]["model_version"], "0.1.0");
    let deployment = dep["data"]["id"].as_str().unwrap().to_string();
    let (s, v) = app.v1(Method::DELETE, &format!("/api/v1/models/{id}"), t, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("RESOURCE_003")),
        "in use: {v}"
    );

    let question = json!([{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]);
    let body =
        json!({"deployment_id": deployment, "messages": question, "parameters": {"max_tokens": 24, "temperature": 0}});
    let loading_since = std::time::Instant::now();
    let answer = loop {
        let (s, v, _) = app
            .call(Method::POST, "/api/v1/inference/generate", t, Some(body.clone()))
            .await;
        if s == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                loading_since.elapsed() < std::time::Duration::from_secs(120),
                "the uploaded model did not load within two minutes: {v}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(s, StatusCode::OK, "{v}");
        break v["data"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
    };
    assert!(answer.contains("Paris"), "{answer}");
    let body = json!({"model": id, "messages": question, "max_tokens": 24, "temperature": 0});
    let (s, v, _) = app
        .call(Method::POST, "/v1/chat/completions", t, Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "the model's id names its latest version: {v}");
    let other = user(&app).await;
    let (s, v, _) = app
        .call(Method::POST, "/v1/chat/completions", Some(other.as_str()), Some(body))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a private model is no one else's: {v}");

    let (s, _) = app
        .v1(
            Method::DELETE,
            &format!("/api/v1/inference/deployments/{deployment}"),
            t,
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = app.v1(Method::DELETE, &format!("/api/v1/models/{id}"), t, None).await;
    assert_eq!(s, StatusCode::OK, "free once its deployment is gone: {v}");
}

async fn completions_that_do_not_match_the_declaration_fail_the_version(b: Backend) {
    let app = spawn_app(b).await;
    let token = user(&app).await;
    let t = Some(token.as_str());
    let id = upload(&app, &token, "base", &[]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let big = gguf(3 << 20);
    let start = |version: &str, sha: String, size: usize| {
        let body = json!({"version": version, "files": [{"field": "model_file", "size": size, "sha256": sha, "format": "gguf"}]});
        let app = &app;
        let path = format!("/api/v1/models/{id}/versions");
        async move {
            let (s, v) = app.v1(Method::POST, &path, t, Some(body)).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            v["data"]["upload"].clone()
        }
    };
    // The declared digest is not the file's: the version fails, and says why.
    let up = start("2.0.0", sha256_hex(b"something else"), big.len()).await;
    let done = json!({"files": [put_parts(&app, &up, "model_file", &big).await]});
    let (s, v) = app
        .v1(Method::POST, up["complete_url"].as_str().unwrap(), t, Some(done))
        .await;
    assert_eq!(s, StatusCode::OK, "the size and header are right: {v}");
    let task = crate::datasets::finished(&app, &token, v["data"]["task_id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(task["error"].as_str().unwrap().contains("sha256"), "{task}");
    let (_, vs) = app
        .v1(Method::GET, &format!("/api/v1/models/{id}/versions"), t, None)
        .await;
    let failed = vs["data"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "2.0.0")
        .unwrap()
        .clone();
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("sha256"), "{failed}");

    // A part left out: the client is told, and may still finish the upload.
    let mut two = gguf(8 << 20);
    two.truncate(two.len());
    let up = start("3.0.0", sha256_hex(&two), two.len()).await;
    let mut done = put_parts(&app, &up, "model_file", &two).await;
    let all = done["parts"].clone();
    done["parts"] = json!([all[0]]);
    let (s, v) = app
        .v1(
            Method::POST,
            up["complete_url"].as_str().unwrap(),
            t,
            Some(json!({"files": [done.clone()]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("bytes"),
        "the size tells a part was left out: {v}"
    );
    let (s, v) = app
        .v1(
            Method::POST,
            up["complete_url"].as_str().unwrap(),
            t,
            Some(json!({"files": []})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "a failed version is done with: {v}");

    let up = start("4.0.0", sha256_hex(&two), two.len()).await;
    let mut done = put_parts(&app, &up, "model_file", &two).await;
    done["parts"][0]["etag"] = json!("\"0000\"");
    let (s, v) = app
        .v1(
            Method::POST,
            up["complete_url"].as_str().unwrap(),
            t,
            Some(json!({"files": [done]})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an ETag that is not the part's: {v}"
    );
    let done = json!({"files": [put_parts(&app, &up, "model_file", &two).await]});
    let (s, v) = app
        .v1(Method::POST, up["complete_url"].as_str().unwrap(), t, Some(done))
        .await;
    assert_eq!(
        (s, v["data"]["status"].as_str()),
        (StatusCode::OK, Some("validating")),
        "then the right parts finish it: {v}"
    );
    let task = crate::datasets::finished(&app, &token, v["data"]["task_id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "completed", "{task}");

    for (body, what) in [
        (
            json!({"version": "5.0.0", "files": [{"field": "model_file", "size": 60_000_000_000u64, "sha256": "a".repeat(64), "format": "gguf"}]}),
            "over 50 GB",
        ),
        (
            json!({"version": "5.0.0", "files": [{"field": "model_file", "size": 10, "sha256": "a".repeat(64)}]}),
            "no format",
        ),
        (json!({"version": "5.0.0", "files": []}), "no files"),
        (
            json!({"version": "1.0.0", "files": [{"field": "model_file", "size": 10, "sha256": "a".repeat(64), "format": "gguf"}]}),
            "a version taken",
        ),
    ] {
        let (s, v) = app
            .v1(Method::POST, &format!("/api/v1/models/{id}/versions"), t, Some(body))
            .await;
        assert!(s.is_client_error(), "{what}: {v}");
    }
    let forged = up["files"][0]["parts"][0]["url"]
        .as_str()
        .unwrap()
        .replace("signature=", "signature=00");
    if forged.starts_with('/') {
        let r = reqwest::Client::new()
            .put(format!("{}{forged}", app.url))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "a forged part URL");
    }
}

async fn storage_used(app: &TestApp, token: &str) -> u64 {
    let (_, v) = app.v1(Method::GET, "/api/v1/users/me", Some(token), None).await;
    assert_eq!(v["data"]["quota"]["storage_limit"], 1 << 20, "{v}");
    v["data"]["quota"]["storage_used"].as_u64().unwrap()
}

async fn uploads_past_the_storage_quota_are_refused_before_any_byte_moves(b: Backend) {
    let app = spawn_with(b, |c| c.identity.storage_bytes = 1 << 20).await;
    let token = user(&app).await;
    let t = Some(token.as_str());
    let m = upload(&app, &token, "small", &[("visibility", "public")]).await;
    let id = m["id"].as_str().unwrap().to_string();
    let size = gguf(8).len() as u64;
    assert_eq!(storage_used(&app, &token).await, size);

    let refused = |s: StatusCode, v: &Value| {
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("RESOURCE_004")),
            "{v}"
        );
    };
    let (s, v) = send_form(
        &app,
        "/api/v1/models",
        &token,
        model_form("big", &[], Some(gguf(300_000))),
    )
    .await;
    refused(s, &v);
    let declared = json!({"version": "2.0.0", "files": [{"field": "model_file", "size": 2 << 20, "sha256": "a".repeat(64), "format": "gguf"}]});
    let (s, v) = app
        .v1(
            Method::POST,
            &format!("/api/v1/models/{id}/versions"),
            t,
            Some(declared),
        )
        .await;
    refused(s, &v);
    let (_, vs) = app
        .v1(Method::GET, &format!("/api/v1/models/{id}/versions"), t, None)
        .await;
    assert_eq!(
        vs["data"]["versions"].as_array().unwrap().len(),
        1,
        "no version started: {vs}"
    );
    assert_eq!(
        app.repo().blobs.list("models/").await.unwrap().len(),
        1,
        "no file written"
    );

    // Another user's clone counts against the cloner.
    let other = user(&app).await;
    let (s, v) = app
        .v1(
            Method::POST,
            &format!("/api/v1/models/{id}/clone"),
            Some(other.as_str()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(storage_used(&app, &other).await, size);

    let (s, _) = app.v1(Method::DELETE, &format!("/api/v1/models/{id}"), t, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        storage_used(&app, &token).await,
        0,
        "a deleted model gives its bytes back"
    );
}

async fn sgt_models_are_in_the_registry_under_the_sgt_apis_rules(b: Backend) {
    let app = spawn_app(b).await;
    let (alice, bob) = (user(&app).await, user(&app).await);
    let (a, bb) = (Some(alice.as_str()), Some(bob.as_str()));
    let sgt = app.sgt_key(&alice, &["model:read", "model:write"]).await;
    app.create_model(&sgt, "shop", "secret-net", 4, 2, false).await;
    app.create_model(&sgt, "shop", "open-net", 3, 1, true).await;
    let listed = |token| {
        let app = &app;
        async move {
            let (_, v) = app
                .v1(Method::GET, "/api/v1/models?type=sgt&sort=name&order=asc", token, None)
                .await;
            v["data"]["models"].as_array().unwrap().clone()
        }
    };
    let mine = listed(a).await;
    let names: Vec<&str> = mine.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shop/open-net", "shop/secret-net"]);
    let theirs = listed(bb).await;
    assert_eq!(theirs.len(), 1, "others see the public one only: {theirs:?}");
    let open = theirs[0]["id"].as_str().unwrap().to_string();
    let (_, d) = app.v1(Method::GET, &format!("/api/v1/models/{open}"), bb, None).await;
    assert_eq!(
        (
            d["data"]["metadata"]["in_size"].as_u64(),
            d["data"]["metadata"]["out_size"].as_u64()
        ),
        (Some(3), Some(1)),
        "{d}"
    );
    let (s, _) = app
        .v1(Method::POST, &format!("/api/v1/models/{open}/like"), bb, None)
        .await;
    assert_eq!(s, 200, "others may like it");
    let (s, v) = app
        .v1(
            Method::PUT,
            &format!("/api/v1/models/{open}"),
            a,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("RESOURCE_002")),
        "{v}"
    );
    let (s, _) = app
        .v1(Method::DELETE, &format!("/api/v1/models/{open}"), bb, None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only its owner deletes it");

    // Deleting in either API deletes in both.
    let (s, v) = app.v1(Method::DELETE, &format!("/api/v1/models/{open}"), a, None).await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<String> = app
        .my_models(&sgt)
        .await
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["secret-net"]);
    app.ok(
        "/sgt/public/delete_sgt_model",
        sgt.with(json!({"app_name": "shop", "name": "secret-net"})),
    )
    .await;
    assert!(listed(a).await.is_empty());
    let (_, v) = app.v1(Method::GET, "/api/v1/models", a, None).await;
    assert_eq!(v["data"]["pagination"]["total"], 0, "{v}");
}
