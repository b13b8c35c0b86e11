//! Projects (seed 002) over HTTP on both backends: CRUD, what they hold, `stats`, and the
//! rules: another user's project is 404, a project that holds anything cannot be deleted.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(
    a_project_is_created_read_updated_and_deleted_and_hidden_from_others,
    a_project_counts_its_models_and_deployments_and_is_not_deleted_while_it_holds_them,
);

async fn user(app: &TestApp) -> String {
    app.signed_up().await.0["access_token"].as_str().unwrap().to_string()
}

async fn a_project_is_created_read_updated_and_deleted_and_hidden_from_others(b: Backend) {
    let app = crate::support::spawn_app(b).await;
    let (alice, bob) = (user(&app).await, user(&app).await);
    let (a, bb) = (Some(alice.as_str()), Some(bob.as_str()));
    let (s, v) = app
        .v1(
            Method::POST,
            "/api/v1/projects",
            a,
            Some(json!({"name": " Support ", "description": "line one\nline two", "tags": ["bot"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (v["data"]["name"].as_str(), v["data"]["counts"]["models"].as_u64()),
        (Some("Support"), Some(0))
    );
    let (_, v) = app.v1(Method::GET, "/api/v1/projects", a, None).await;
    assert_eq!(v["data"]["pagination"]["total"], 1, "{v}");
    let (s, v) = app
        .v1(
            Method::PUT,
            &format!("/api/v1/projects/{id}"),
            a,
            Some(json!({"name": "Support 2"})),
        )
        .await;
    assert_eq!(
        (s, v["data"]["name"].as_str()),
        (StatusCode::OK, Some("Support 2")),
        "{v}"
    );
    assert_eq!(v["data"]["tags"], json!(["bot"]), "what the update leaves out stays");

    for (method, path) in [
        (Method::GET, format!("/api/v1/projects/{id}")),
        (Method::PUT, format!("/api/v1/projects/{id}")),
        (Method::DELETE, format!("/api/v1/projects/{id}")),
    ] {
        let body = (method == Method::PUT).then(|| json!({"name": "mine"}));
        let (s, v) = app.v1(method.clone(), &path, bb, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    let (_, v) = app.v1(Method::GET, "/api/v1/projects/stats", bb, None).await;
    assert_eq!(v["data"]["total_projects"], 0, "{v}");

    for (body, status) in [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "  "}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "x".repeat(101)}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"name": "x", "tags": vec!["t"; 21]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"name": 5}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (s, v) = app.v1(Method::POST, "/api/v1/projects", a, Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {v}");
    }
    let (s, _) = app.v1(Method::DELETE, &format!("/api/v1/projects/{id}"), a, None).await;
    assert_eq!(s, 200);
    let (s, _) = app.v1(Method::GET, &format!("/api/v1/projects/{id}"), a, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn counts(app: &TestApp, token: &str, id: &str) -> Value {
    let (_, v) = app
        .v1(Method::GET, &format!("/api/v1/projects/{id}"), Some(token), None)
        .await;
    v["data"]["counts"].clone()
}

async fn a_project_counts_its_models_and_deployments_and_is_not_deleted_while_it_holds_them(b: Backend) {
    let (app, alice) = crate::openai::llm_app(b).await;
    let bob = user(&app).await;
    let a = Some(alice.as_str());
    let (_, v) = app
        .v1(Method::POST, "/api/v1/projects", a, Some(json!({"name": "p"})))
        .await;
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let (_, v) = app
        .v1(Method::POST, "/api/v1/projects", a, Some(json!({"name": "q"})))
        .await;
    let other = v["data"]["id"].as_str().unwrap().to_string();

    let (s, m) = app
        .v1(
            Method::POST,
            "/api/v1/models",
            a,
            Some(json!({"name": "m", "type": "llm", "project_id": id})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let model = m["data"]["id"].as_str().unwrap().to_string();
    let deploy = json!({"name": "d", "model_id": crate::openai::MODEL, "project_id": id});
    let (s, d) = app
        .v1(Method::POST, "/api/v1/inference/deployments", a, Some(deploy))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let deployment = d["data"]["id"].as_str().unwrap().to_string();
    let c = counts(&app, &alice, &id).await;
    assert_eq!(
        (c["models"].as_u64(), c["deployments"].as_u64()),
        (Some(1), Some(1)),
        "{c}"
    );

    let (s, v) = app.v1(Method::DELETE, &format!("/api/v1/projects/{id}"), a, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("RESOURCE_003")),
        "{v}"
    );
    // Another user's project cannot be named.
    let (s, v) = app
        .v1(
            Method::POST,
            "/api/v1/models",
            Some(bob.as_str()),
            Some(json!({"name": "m", "type": "llm", "project_id": id})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["details"][0]["field"].as_str()),
        (StatusCode::NOT_FOUND, Some("project_id")),
        "{v}"
    );

    // A model moved to another project is counted there.
    let (s, _) = app
        .v1(
            Method::PUT,
            &format!("/api/v1/models/{model}"),
            a,
            Some(json!({"project_id": other})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(counts(&app, &alice, &id).await["models"], 0);
    assert_eq!(counts(&app, &alice, &other).await["models"], 1);
    let (_, st) = app.v1(Method::GET, "/api/v1/projects/stats", a, None).await;
    assert_eq!(
        (
            st["data"]["total_projects"].as_u64(),
            st["data"]["totals"]["models"].as_u64()
        ),
        (Some(2), Some(1)),
        "{st}"
    );
    assert_eq!(st["data"]["totals"]["deployments"], 1);

    let (s, _) = app
        .v1(
            Method::DELETE,
            &format!("/api/v1/inference/deployments/{deployment}"),
            a,
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = app.v1(Method::DELETE, &format!("/api/v1/projects/{id}"), a, None).await;
    assert_eq!(s, 200, "empty now: {v}");
    let (s, _) = app
        .v1(Method::DELETE, &format!("/api/v1/models/{model}"), a, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(counts(&app, &alice, &other).await["models"], 0);
}
