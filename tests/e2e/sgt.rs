//! Every SGT endpoint, every documented exception, and bad input of every kind.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{rows, spawn_app, spawn_with, Backend, User};

pub const UPDATE: &str = "/sgt/private/update_auth_token";
pub const CHECK: &str = "/sgt/public/check_auth_token";
pub const CREATE: &str = "/sgt/public/create_sgt_model";
pub const DELETE: &str = "/sgt/public/delete_sgt_model";
pub const CLIENT_DATA: &str = "/sgt/public/update_sgt_model_client_data";
pub const MINE: &str = "/sgt/public/read_my_sgt_model";
pub const PUBLIC: &str = "/sgt/public/read_public_sgt_model";
pub const CLONE: &str = "/sgt/public/clone_sgt_model_to_mine";
pub const RUN: &str = "/sgt/public/run_sgt_model";
pub const UPLOAD: &str = "/sgt/public/upload_sgt_model_train_data";
pub const TYPES: &str = "/sgt/public/list_model_type";
/// Every route that reads credentials from its body: all but `list_model_type`.
const READ_CREDENTIALS: [&str; 10] = [
    UPDATE,
    CHECK,
    CREATE,
    DELETE,
    CLIENT_DATA,
    MINE,
    PUBLIC,
    CLONE,
    RUN,
    UPLOAD,
];

/// Asserts that `answer` refuses a body as SGT does: 400 with `ValidationException`.
fn assert_validation_refused(answer: &(StatusCode, Value), context: &str) {
    assert_eq!(
        (answer.0, answer.1["exception"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ValidationException")),
        "{context}: {}",
        answer.1
    );
}

on_both_backends!(
    secrets_are_created_checked_rotated_and_expire,
    list_model_type_needs_no_credentials_and_lists_std_first,
    a_created_model_is_listed_with_every_documented_field,
    creating_a_model_validates_its_fields,
    every_authenticated_endpoint_refuses_unknown_users_and_wrong_secrets,
    eight_concurrent_creates_of_one_name_have_exactly_one_winner,
    client_data_updates_touch_only_client_data,
    client_data_of_every_json_type_comes_back_as_sent_through_create_update_reads_and_clone,
    client_data_over_64_kib_serialized_is_refused_and_nothing_is_written,
    client_data_nesting_counts_toward_the_bodys_16_levels,
    public_models_are_listed_for_everyone_and_private_ones_are_not,
    another_users_private_model_cannot_be_read_changed_run_or_cloned,
    clones_copy_weights_and_fields_and_refuse_taken_names,
    run_checks_row_shapes_and_answers_one_row_per_input,
    a_model_server_with_no_room_answers_busy_as_a_run_exception_and_keeps_the_model,
    uploads_check_pair_shapes_and_need_an_existing_model,
    deleted_models_are_gone_everywhere,
    bad_bodies_are_refused_credentials_first_then_with_a_validation_exception,
    bodies_nested_a_million_levels_deep_are_refused_and_the_server_keeps_serving,
    a_crowd_of_half_sent_large_bodies_is_refused_as_busy_and_small_requests_still_go_through,
    clients_that_stall_in_a_head_or_a_body_are_cut_off_after_the_idle_timeout,
    eight_clients_running_at_once_all_get_correct_answers,
    sgt_clients_big_bodies_are_accepted,
    guessing_secrets_from_one_address_is_cut_off_before_the_slow_hash,
);

async fn secrets_are_created_checked_rotated_and_expire(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    assert_eq!(app.ok(CHECK, user.creds()).await, json!(true));
    assert_eq!(
        app.ok(CHECK, json!({"secret_id": user.id, "secret_key": "wrong"}))
            .await,
        json!(false)
    );
    assert_eq!(
        app.ok(CHECK, json!({"secret_id": "nobody", "secret_key": user.key}))
            .await,
        json!(false)
    );

    let wrong_key =
        json!({"key": "not-the-key", "secret_id": "x", "secret_key": "y", "end_time": "2099-01-01 00:00:00"});
    app.fails(UPDATE, wrong_key, "AuthException").await;
    assert_eq!(
        app.ok(CHECK, json!({"secret_id": "x", "secret_key": "y"})).await,
        json!(false)
    );

    // Rotation: the old secret stops working at once.
    let rotate = json!({"key": app.system_key, "secret_id": user.id, "secret_key": "rotated", "end_time": "2099-01-01 00:00:00"});
    assert_eq!(app.ok(UPDATE, rotate).await, Value::Null);
    assert_eq!(app.ok(CHECK, user.creds()).await, json!(false));
    assert_eq!(
        app.ok(CHECK, json!({"secret_id": user.id, "secret_key": "rotated"}))
            .await,
        json!(true)
    );

    // Expired secrets are refused everywhere.
    let expired = json!({"key": app.system_key, "secret_id": "old", "secret_key": "k", "doc": "", "end_time": "2001-01-01 00:00:00"});
    app.ok(UPDATE, expired).await;
    assert_eq!(
        app.ok(CHECK, json!({"secret_id": "old", "secret_key": "k"})).await,
        json!(false)
    );
    app.fails(MINE, json!({"secret_id": "old", "secret_key": "k"}), "AuthException")
        .await;

    let bad_time = json!({"key": app.system_key, "secret_id": "t", "secret_key": "k", "end_time": "tomorrow"});
    assert!(app
        .fails(UPDATE, bad_time, "ValidationException")
        .await
        .contains("YYYY-MM-DD HH:MM:SS"));
    let no_time = json!({"key": app.system_key, "secret_id": "t", "secret_key": "k"});
    assert!(app
        .fails(UPDATE, no_time, "ValidationException")
        .await
        .contains("end_time"));
    let empty_id =
        json!({"key": app.system_key, "secret_id": "", "secret_key": "k", "end_time": "2099-01-01 00:00:00"});
    app.fails(UPDATE, empty_id, "ValidationException").await;
}

async fn list_model_type_needs_no_credentials_and_lists_std_first(b: Backend) {
    let app = spawn_app(b).await;
    let types = app.ok(TYPES, json!({})).await;
    assert_eq!(types[0], "std");
    let (status, none) = app.post_raw(TYPES, "").await;
    assert_eq!((status, none), (StatusCode::OK, types));
}

async fn a_created_model_is_listed_with_every_documented_field(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    let body = user.with(json!({
        "name": "m#1", "app_name": "app", "model_type": "std", "client_data": "{\"k\": 1}",
        "in_size": 3, "out_size": 2, "is_public": false
    }));
    assert_eq!(app.ok(CREATE, body.clone()).await, Value::Null);
    let mine = app.my_models(&user).await;
    assert_eq!(
        mine,
        [json!({
            "user_unique_id": user.id, "name": "m#1", "client_data": "{\"k\": 1}", "app_name": "app",
            "model_type": "std", "in_size": 3, "out_size": 2, "is_public": false
        })]
    );
    let msg = app.fails(CREATE, body, "CreateWeightsNetException").await;
    assert!(msg.contains("already exists"), "{msg}");
    // The same name in another app, or a name that only looks like a key, is a different model.
    app.create_model(&user, "app2", "m#1", 3, 2, false).await;
    app.create_model(&user, "app", "m", 3, 2, false).await;
    assert_eq!(app.my_models(&user).await.len(), 3);
}

async fn creating_a_model_validates_its_fields(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    let base = json!({"name": "m", "app_name": "a", "model_type": "std", "client_data": "", "in_size": 2, "out_size": 1, "is_public": true});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        user.with(b)
    };
    assert!(app
        .fails(CREATE, with("model_type", json!("huge")), "CreateWeightsNetException")
        .await
        .contains("model_type"));
    assert!(app
        .fails(CREATE, with("in_size", json!(0)), "CreateWeightsNetException")
        .await
        .contains("in_size"));
    assert!(app
        .fails(CREATE, with("out_size", json!(100000)), "CreateWeightsNetException")
        .await
        .contains("out_size"));
    assert!(app
        .fails(CREATE, with("in_size", json!("2")), "ValidationException")
        .await
        .contains("invalid type"));
    assert!(app
        .fails(CREATE, with("in_size", json!(-2)), "ValidationException")
        .await
        .contains("invalid value"));
    assert!(app
        .fails(CREATE, with("is_public", json!("yes")), "ValidationException")
        .await
        .contains("invalid type"));
    assert!(app
        .fails(CREATE, with("name", json!("")), "ValidationException")
        .await
        .contains("name"));
    app.fails(CREATE, with("name", json!("x".repeat(300))), "ValidationException")
        .await;
    app.fails(
        CREATE,
        with("client_data", json!("x".repeat(70_000))),
        "ValidationException",
    )
    .await;
    let mut missing = user.with(base.clone());
    missing.as_object_mut().unwrap().remove("app_name");
    assert!(app
        .fails(CREATE, missing, "ValidationException")
        .await
        .contains("app_name"));
    assert!(app.my_models(&user).await.is_empty(), "nothing was half-created");
}

async fn every_authenticated_endpoint_refuses_unknown_users_and_wrong_secrets(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "m", 2, 1, true).await;
    let stranger = User {
        id: "stranger".into(),
        key: "k".into(),
    };
    let wrong = User {
        id: user.id.clone(),
        key: "wrong".into(),
    };
    let bodies = [
        (
            CREATE,
            json!({"name": "n", "app_name": "a", "model_type": "std", "client_data": "", "in_size": 2, "out_size": 1, "is_public": true}),
        ),
        (DELETE, json!({"name": "m", "app_name": "a"})),
        (CLIENT_DATA, json!({"name": "m", "app_name": "a", "client_data": "x"})),
        (MINE, json!({})),
        (PUBLIC, json!({})),
        (
            CLONE,
            json!({"new_name": "c", "app_name": "a", "author_unique_id": user.id, "name": "m"}),
        ),
        (RUN, json!({"name": "m", "app_name": "a", "data": [[0.1, 0.2]]})),
        (
            UPLOAD,
            json!({"name": "m", "app_name": "a", "train_data": [[[0.1, 0.2], [0.3]]]}),
        ),
    ];
    for who in [&stranger, &wrong] {
        for (path, body) in &bodies {
            app.fails(path, who.with(body.clone()), "AuthException").await;
        }
    }
    assert_eq!(app.my_models(&user).await.len(), 1, "refused calls changed nothing");
}

async fn eight_concurrent_creates_of_one_name_have_exactly_one_winner(b: Backend) {
    let app = std::sync::Arc::new(spawn_app(b).await);
    let user = app.new_user().await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (app, user) = (app.clone(), user.clone());
            tokio::spawn(async move {
                let body = user.with(json!({
                    "name": "race", "app_name": "a", "model_type": "std", "client_data": format!("writer {i}"),
                    "in_size": 2, "out_size": 1, "is_public": false
                }));
                app.post(CREATE, body).await
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::OK => winners += 1,
            _ => assert_eq!(body["exception"], "CreateWeightsNetException", "{body}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(app.my_models(&user).await.len(), 1);
}

async fn client_data_updates_touch_only_client_data(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "m", 2, 1, true).await;
    let before = app.my_models(&user).await;
    app.ok(
        CLIENT_DATA,
        user.with(json!({"name": "m", "app_name": "a", "client_data": "new"})),
    )
    .await;
    let after = app.my_models(&user).await;
    let mut expected = before[0].clone();
    expected["client_data"] = json!("new");
    assert_eq!(after, [expected]);
    app.fails(
        CLIENT_DATA,
        user.with(json!({"name": "none", "app_name": "a", "client_data": "x"})),
        "FindModelException",
    )
    .await;
    let msg = app
        .fails(
            CLIENT_DATA,
            user.with(json!({"name": "m", "app_name": "a"})),
            "ValidationException",
        )
        .await;
    assert!(msg.contains("client_data"), "{msg}");
}

/// One of each JSON type, with floats that must stay floats and nesting inside nesting.
fn client_values() -> Vec<Value> {
    vec![
        json!({}),
        json!({"state": {"step": 3, "weights": [1.0, -2.5, 1e-7], "done": false, "note": null}, "": "empty key"}),
        json!([]),
        json!([1, "two", 3.0, null, [true], {"k": "v"}]),
        json!("客户端数据"),
        json!(""),
        json!(0),
        json!(1.0),
        json!(-12345678901i64),
        json!(0.1),
        json!(true),
        json!(false),
        Value::Null,
    ]
}

async fn client_data_of_every_json_type_comes_back_as_sent_through_create_update_reads_and_clone(b: Backend) {
    let app = spawn_app(b).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    let values = client_values();
    let create = |name: String, value: &Value| {
        alice.with(
            json!({"name": name, "app_name": "a", "model_type": "std", "client_data": value,
                          "in_size": 2, "out_size": 1, "is_public": true}),
        )
    };
    for (i, value) in values.iter().enumerate() {
        app.ok(CREATE, create(format!("m{i}"), value)).await;
    }
    let by_name = |models: Vec<Value>| -> std::collections::HashMap<String, Value> {
        models
            .into_iter()
            .map(|m| (m["name"].as_str().unwrap().to_string(), m["client_data"].clone()))
            .collect()
    };
    let mine = by_name(app.my_models(&alice).await);
    let public = by_name(serde_json::from_value(app.ok(PUBLIC, bob.creds()).await).unwrap());
    for (i, value) in values.iter().enumerate() {
        assert_eq!(&mine[&format!("m{i}")], value, "read_my_sgt_model, value {i}");
        assert_eq!(&public[&format!("m{i}")], value, "read_public_sgt_model, value {i}");
    }
    // Each model's value replaced by the next one's: a change of type included.
    for i in 0..values.len() {
        let next = &values[(i + 1) % values.len()];
        app.ok(
            CLIENT_DATA,
            alice.with(json!({"name": format!("m{i}"), "app_name": "a", "client_data": next})),
        )
        .await;
        app.ok(
            CLONE,
            bob.with(json!({"new_name": format!("c{i}"), "app_name": "a", "author_unique_id": alice.id, "name": format!("m{i}")})),
        )
        .await;
    }
    let mine = by_name(app.my_models(&alice).await);
    let clones = by_name(app.my_models(&bob).await);
    for i in 0..values.len() {
        let next = &values[(i + 1) % values.len()];
        assert_eq!(&mine[&format!("m{i}")], next, "after update, value {i}");
        assert_eq!(&clones[&format!("c{i}")], next, "clone, value {i}");
    }
    // A create without client_data stores null.
    let mut missing = create("bare".into(), &Value::Null);
    missing.as_object_mut().unwrap().remove("client_data");
    app.ok(CREATE, missing).await;
    assert_eq!(by_name(app.my_models(&alice).await)["bare"], Value::Null);
}

async fn client_data_over_64_kib_serialized_is_refused_and_nothing_is_written(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    // 66 strings of 1,000 bytes: each one small, the value over 64 KiB.
    let big = json!({"parts": vec!["x".repeat(1000); 66]});
    let body = user.with(
        json!({"name": "m", "app_name": "a", "model_type": "std", "client_data": big,
                                "in_size": 2, "out_size": 1, "is_public": false}),
    );
    let msg = app.fails(CREATE, body, "ValidationException").await;
    assert!(msg.contains("client_data"), "{msg}");
    assert!(app.my_models(&user).await.is_empty(), "nothing was half-created");

    app.create_model(&user, "a", "m", 2, 1, false).await;
    let msg = app
        .fails(
            CLIENT_DATA,
            user.with(json!({"name": "m", "app_name": "a", "client_data": big})),
            "ValidationException",
        )
        .await;
    assert!(msg.contains("client_data"), "{msg}");
    assert_eq!(
        app.my_models(&user).await[0]["client_data"],
        "cd",
        "the old value stays"
    );
    // Just under the limit is fine.
    let fits = json!({"parts": vec!["x".repeat(1000); 64]});
    app.ok(
        CLIENT_DATA,
        user.with(json!({"name": "m", "app_name": "a", "client_data": fits})),
    )
    .await;
    assert_eq!(app.my_models(&user).await[0]["client_data"], fits);
}

async fn client_data_nesting_counts_toward_the_bodys_16_levels(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "m", 2, 1, false).await;
    let nested = |levels: usize| (0..levels).fold(json!(1), |inner, _| json!([inner]));
    // The body itself is the first level: 15 more fit.
    app.ok(
        CLIENT_DATA,
        user.with(json!({"name": "m", "app_name": "a", "client_data": nested(15)})),
    )
    .await;
    assert_eq!(app.my_models(&user).await[0]["client_data"], nested(15));
    let msg = app
        .fails(
            CLIENT_DATA,
            user.with(json!({"name": "m", "app_name": "a", "client_data": nested(16)})),
            "ValidationException",
        )
        .await;
    assert!(msg.contains("16 levels"), "{msg}");
    assert_eq!(app.my_models(&user).await[0]["client_data"], nested(15));
}

async fn public_models_are_listed_for_everyone_and_private_ones_are_not(b: Backend) {
    let app = spawn_app(b).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    app.create_model(&alice, "a", "shared", 2, 1, true).await;
    app.create_model(&alice, "a", "secret", 2, 1, false).await;
    app.create_model(&bob, "b", "bobs", 2, 1, true).await;
    let public: Vec<Value> = serde_json::from_value(app.ok(PUBLIC, bob.creds()).await).unwrap();
    let mut names: Vec<(String, String)> = public
        .iter()
        .map(|m| {
            (
                m["user_unique_id"].as_str().unwrap().into(),
                m["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    names.sort();
    let mut expected = vec![
        (alice.id.clone(), "shared".to_string()),
        (bob.id.clone(), "bobs".to_string()),
    ];
    expected.sort();
    assert_eq!(names, expected);
    assert!(public.iter().all(|m| m["is_public"] == json!(true)));
    assert_eq!(
        app.my_models(&bob).await.len(),
        1,
        "read_my lists only the caller's models"
    );
}

async fn another_users_private_model_cannot_be_read_changed_run_or_cloned(b: Backend) {
    let app = spawn_app(b).await;
    let (alice, mallory) = (app.new_user().await, app.new_user().await);
    app.create_model(&alice, "a", "private", 2, 1, false).await;
    let probe = rows(2, 2, 1);
    let answer = app.run(&alice, "a", "private", &probe).await;
    // Mallory addresses models by name in her own namespace: Alice's is simply not there.
    let addr = json!({"name": "private", "app_name": "a"});
    app.fails(
        RUN,
        mallory.with(json!({"name": "private", "app_name": "a", "data": probe})),
        "FindModelException",
    )
    .await;
    app.fails(
        CLIENT_DATA,
        mallory.with(json!({"name": "private", "app_name": "a", "client_data": "pwned"})),
        "FindModelException",
    )
    .await;
    app.fails(DELETE, mallory.with(addr.clone()), "FindModelException")
        .await;
    app.fails(
        UPLOAD,
        mallory.with(json!({"name": "private", "app_name": "a", "train_data": [[[0.0, 0.0], [0.5]]]})),
        "FindModelException",
    )
    .await;
    // Cloning by author id is refused exactly like a missing model, so it cannot be detected.
    let clone = json!({"new_name": "stolen", "app_name": "a", "author_unique_id": alice.id, "name": "private"});
    let hidden = app.fails(CLONE, mallory.with(clone), "FindModelException").await;
    let missing = json!({"new_name": "stolen", "app_name": "a", "author_unique_id": alice.id, "name": "nope"});
    let absent = app.fails(CLONE, mallory.with(missing), "FindModelException").await;
    assert_eq!(hidden.replace("private", "X"), absent.replace("nope", "X"));
    assert!(!serde_json::to_string(&app.ok(PUBLIC, mallory.creds()).await)
        .unwrap()
        .contains("private"));
    // Alice's model is untouched.
    assert_eq!(app.my_models(&alice).await[0]["client_data"], "cd");
    assert_eq!(app.run(&alice, "a", "private", &probe).await, answer);
    assert!(app.my_models(&mallory).await.is_empty());
}

async fn clones_copy_weights_and_fields_and_refuse_taken_names(b: Backend) {
    let app = spawn_app(b).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    app.create_model(&alice, "a", "orig", 3, 2, true).await;
    let probe = rows(4, 3, 2);
    let original = app.run(&alice, "a", "orig", &probe).await;
    // Cloning your own model is allowed.
    app.ok(
        CLONE,
        alice.with(json!({"new_name": "copy", "app_name": "a", "author_unique_id": alice.id, "name": "orig"})),
    )
    .await;
    assert_eq!(app.run(&alice, "a", "copy", &probe).await, original);
    // Another user's public model.
    app.ok(
        CLONE,
        bob.with(json!({"new_name": "mine", "app_name": "a", "author_unique_id": alice.id, "name": "orig"})),
    )
    .await;
    assert_eq!(app.run(&bob, "a", "mine", &probe).await, original);
    let bobs = app.my_models(&bob).await;
    assert_eq!(
        (bobs[0]["user_unique_id"].as_str(), bobs[0]["in_size"].as_u64()),
        (Some(bob.id.as_str()), Some(3))
    );
    let taken = json!({"new_name": "mine", "app_name": "a", "author_unique_id": alice.id, "name": "orig"});
    app.fails(CLONE, bob.with(taken), "CloneWeightsNetToMineException")
        .await;
    app.fails(
        CLONE,
        bob.with(json!({"new_name": "x", "app_name": "a", "author_unique_id": alice.id, "name": "none"})),
        "FindModelException",
    )
    .await;
    app.fails(
        CLONE,
        bob.with(json!({"new_name": "x", "app_name": "a", "author_unique_id": alice.id})),
        "ValidationException",
    )
    .await;
}

async fn a_model_server_with_no_room_answers_busy_as_a_run_exception_and_keeps_the_model(b: Backend) {
    let app = spawn_with(b, |c| c.sidecar_queue = 0).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "m", 3, 2, false).await;
    let run = user.with(json!({"name": "m", "app_name": "a", "data": rows(2, 3, 1)}));
    let msg = app.fails(RUN, run, "RunWeightsNetException").await;
    assert!(msg.contains("busy"), "{msg}");
    assert_eq!(app.my_models(&user).await.len(), 1);
}

async fn run_checks_row_shapes_and_answers_one_row_per_input(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "m", 3, 2, false).await;
    assert!(app.run(&user, "a", "m", &[]).await.is_empty());
    let out = app.run(&user, "a", "m", &rows(5, 3, 3)).await;
    assert_eq!(out.len(), 5);
    assert!(out.iter().all(|r| r.len() == 2 && r.iter().all(|v| v.is_finite())));
    assert_eq!(
        app.run(&user, "a", "m", &rows(5, 3, 3)).await,
        out,
        "an untrained model still answers deterministically"
    );
    let msg = app
        .fails(
            RUN,
            user.with(json!({"name": "m", "app_name": "a", "data": [[1, 2, 3], [1, 2]]})),
            "RunWeightsNetException",
        )
        .await;
    assert!(msg.contains("row 1"), "{msg}");
    app.fails(
        RUN,
        user.with(json!({"name": "m", "app_name": "a", "data": [[1, 2]]})),
        "RunWeightsNetException",
    )
    .await;
    app.fails(
        RUN,
        user.with(json!({"name": "m", "app_name": "a", "data": [[1, 2, "x"]]})),
        "ValidationException",
    )
    .await;
    app.fails(
        RUN,
        user.with(json!({"name": "m", "app_name": "a", "data": [1, 2, 3]})),
        "ValidationException",
    )
    .await;
    app.fails(
        RUN,
        user.with(json!({"name": "m", "app_name": "a", "data": [[1e39, 0, 0]]})),
        "RunWeightsNetException",
    )
    .await;
    app.fails(
        RUN,
        user.with(json!({"name": "m", "app_name": "a"})),
        "ValidationException",
    )
    .await;
    app.fails(
        RUN,
        user.with(json!({"name": "zz", "app_name": "a", "data": [[1, 2, 3]]})),
        "FindModelException",
    )
    .await;
}

async fn uploads_check_pair_shapes_and_need_an_existing_model(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "m", 2, 1, false).await;
    let up = |data: Value| user.with(json!({"name": "m", "app_name": "a", "train_data": data}));
    assert_eq!(
        app.ok(UPLOAD, up(json!([[[0.1, 0.2], [0.3]], [[0.4, 0.5], [-0.6]]])))
            .await,
        Value::Null
    );
    assert_eq!(app.ok(UPLOAD, up(json!([]))).await, Value::Null);
    assert!(app
        .fails(UPLOAD, up(json!([[[0.1, 0.2], [0.3, 0.4]]])), "UploadDataException")
        .await
        .contains("label"));
    assert!(app
        .fails(UPLOAD, up(json!([[[0.1], [0.3]]])), "UploadDataException")
        .await
        .contains("input"));
    assert!(app
        .fails(
            UPLOAD,
            up(json!([[[0.1, 0.2], [0.3]], [[0.1, 0.2]]])),
            "UploadDataException"
        )
        .await
        .contains("pair"));
    app.fails(UPLOAD, up(json!([[[0.1, 0.2], [0.3], [0.4]]])), "UploadDataException")
        .await;
    app.fails(UPLOAD, up(json!([[0.1, 0.2]])), "ValidationException").await;
    app.fails(UPLOAD, up(json!("data")), "ValidationException").await;
    app.fails(
        UPLOAD,
        user.with(json!({"name": "none", "app_name": "a", "train_data": [[[0.1, 0.2], [0.3]]]})),
        "FindModelException",
    )
    .await;
}

async fn deleted_models_are_gone_everywhere(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "m", 2, 1, true).await;
    app.ok(
        UPLOAD,
        user.with(json!({"name": "m", "app_name": "a", "train_data": [[[0.1, 0.2], [0.3]]]})),
    )
    .await;
    app.ok(DELETE, user.with(json!({"name": "m", "app_name": "a"}))).await;
    assert!(app.my_models(&user).await.is_empty());
    assert_eq!(app.ok(PUBLIC, user.creds()).await, json!([]));
    app.fails(
        RUN,
        user.with(json!({"name": "m", "app_name": "a", "data": [[1, 2]]})),
        "FindModelException",
    )
    .await;
    app.fails(
        DELETE,
        user.with(json!({"name": "m", "app_name": "a"})),
        "FindModelException",
    )
    .await;
    // The name is free again, and the new model starts without the old one's data.
    app.create_model(&user, "a", "m", 2, 1, true).await;
    assert_eq!(app.my_models(&user).await.len(), 1);
}

async fn bad_bodies_are_refused_credentials_first_then_with_a_validation_exception(b: Backend) {
    let app = spawn_with(b, |c| c.body_limit = 64 * 1024).await;
    let user = app.new_user().await;
    let stranger = json!({"secret_id": user.id, "secret_key": "not-the-key"});
    for path in READ_CREDENTIALS {
        // Not a JSON object: there are no credentials to check, so the body itself is refused.
        for body in ["", "{", "[1,2]", "null", "\u{0}", "{\"data\": [[1, 2]"] {
            assert_validation_refused(&app.post_raw(path, body).await, &format!("{path} {body:?}"));
        }
        // Nor is an array of the right credentials in field order, which serde would accept.
        let positional = json!([user.id, user.key]).to_string();
        let answer = app.post_raw(path, positional.clone()).await;
        assert_validation_refused(&answer, &format!("{path} {positional}"));
        // An object without its sender's credentials, or with mistyped or wrong ones, says only
        // that, whatever else is wrong with it.
        let system = json!({"key": app.system_key});
        let mut claims = vec![
            json!({}),
            json!({"secret_id": 5, "key": 5}),
            json!({"key": "wrong", "secret_id": user.id}),
        ];
        if path != CHECK {
            claims.push(stranger.clone()); // check_auth_token answers a wrong secret with `false`
        }
        for body in claims {
            app.fails(path, body, "AuthException").await;
        }
        // With the right credentials, the missing field is named.
        let proven = if path == UPDATE { system } else { user.creds() };
        if ![CHECK, MINE, PUBLIC].contains(&path) {
            let message = app.fails(path, proven, "ValidationException").await;
            assert!(message.contains("missing field"), "{path}: {message}");
        }
        // Bodies over the limit are refused before they are parsed. ~77 KB: over the 64 KB limit
        // but small enough to sit in the loopback send buffer, so the client is never cut off
        // mid-write (EPIPE) by the early 400 and always reads it.
        let big = user.with(json!({"name": "m", "app_name": "a", "data": rows(800, 8, 1)}));
        assert!(serde_json::to_vec(&big).unwrap().len() > 64 * 1024);
        let (status, v) = app.post(path, big).await;
        assert_validation_refused(&(status, v.clone()), path);
        assert!(v["message"].as_str().unwrap().contains("too large"), "{path}: {v}");
    }
    // Unknown routes and wrong methods are plain HTTP errors, never 500.
    let r = app.client.get(format!("{}{RUN}", app.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = app
        .client
        .post(format!("{}/sgt/public/nope", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .client
        .post(format!("{}{CHECK}", app.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().contains_key("x-request-id"),
        "every response carries a request id"
    );
}

/// Each body is a megabyte of `[` inside an object that carries the right credentials. sonic-rs
/// skips values it is not asked for by recursion, so one of these used to overflow the stack and
/// abort the whole gateway.
async fn bodies_nested_a_million_levels_deep_are_refused_and_the_server_keeps_serving(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "m", 2, 1, false).await;
    let creds = user.with(json!({"name": "m", "app_name": "a"})).to_string();
    let abyss = |field: &str| format!("{},\"{field}\":{}", &creds[..creds.len() - 1], "[".repeat(1 << 20));
    for path in READ_CREDENTIALS {
        for field in ["data", "train_data", "secret_id", "unknown"] {
            let (status, v) = app.post_raw(path, abyss(field)).await;
            assert_validation_refused(&(status, v.clone()), &format!("{path} {field}"));
            // The rows reader, which reads a run's `data` first, refuses it in its own words.
            let message = v["message"].as_str().unwrap();
            let expected = match (path, field) {
                (RUN, "data") => "data must be an array of arrays of numbers",
                _ => "nest more than 16 levels",
            };
            assert!(message.contains(expected), "{path} {field}: {message}");
        }
    }
    // A run request's other errors quote the body as sent, not the text the rows reader left.
    let mut trailing = user
        .with(json!({"name": "m", "app_name": "a", "data": [[1, 2]]}))
        .to_string();
    trailing.push_str(" trailing");
    let (_, v) = app.post_raw(RUN, trailing).await;
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("trailing") && !message.contains("null"), "{message}");
    assert_eq!(app.run(&user, "a", "m", &[vec![0.5, 0.5]]).await.len(), 1);
}

/// Large bodies share one memory budget (8 bodies at the limit); each client below sends 200 KiB
/// of a 256 KiB body and stops, holding its share until it goes away.
async fn a_crowd_of_half_sent_large_bodies_is_refused_as_busy_and_small_requests_still_go_through(b: Backend) {
    use tokio::io::AsyncWriteExt;
    let limit = 256 << 10;
    let app = spawn_with(b, |c| c.body_limit = limit).await;
    let user = app.new_user().await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..24 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!("POST {CHECK} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {limit}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![b' '; 200 << 10]).await.unwrap();
        held.push(stream);
    }
    // A whole body under the limit: as busy as the budget, however the server reads it.
    let whole = || format!("{}{}", " ".repeat(200 << 10), user.creds());
    // The server reads the crowd's bytes in its own time: ask until the answer settles.
    let settled = |until: fn(&Value) -> bool| {
        let app = &app;
        async move {
            let mut answer = app.post_raw(CHECK, whole()).await;
            for _ in 0..100 {
                if until(&answer.1) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                answer = app.post_raw(CHECK, whole()).await;
            }
            answer
        }
    };
    let answer = settled(|v| v["exception"] == "ThrottlingException").await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    assert_eq!(answer.1["exception"], "ThrottlingException", "{}", answer.1);
    assert!(answer.1["message"].as_str().unwrap().contains("retry"), "{}", answer.1);
    let (status, v) = app.post_raw("/api/v1/auth/login", whole()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "SERVICE_UNAVAILABLE", "{v}");
    // Small bodies are read from no budget.
    assert_eq!(app.ok(CHECK, user.creds()).await, json!(true));
    // Once the crowd goes, its share comes back.
    drop(held);
    assert_eq!(settled(|v| *v == json!(true)).await, (StatusCode::OK, json!(true)));
}

async fn clients_that_stall_in_a_head_or_a_body_are_cut_off_after_the_idle_timeout(b: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_with(b, |c| c.idle_timeout_secs = 1).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    // What the server sends before it closes a connection that sent `text` and stopped.
    let after_stalling = |text: String| {
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.write_all(text.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let read = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut answer));
            read.await.expect("the server closes the connection").ok();
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let head = format!("POST {CHECK} HTTP/1.1\r\nhost: {addr}\r\n");
    assert!(!after_stalling(head.clone()).await.contains("200 OK"));
    let body = format!("{head}content-length: 1000\r\n\r\n{{\"secret_id\"");
    let answer = after_stalling(body).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("cannot read request body"), "{answer}");
    let v1_body = format!("POST /api/v1/auth/login HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 1000\r\n\r\n{{");
    let answer = after_stalling(v1_body).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("VALIDATION_002"), "{answer}");
    let user = app.new_user().await;
    assert_eq!(app.ok(CHECK, user.creds()).await, json!(true));
}

async fn eight_clients_running_at_once_all_get_correct_answers(b: Backend) {
    let app = std::sync::Arc::new(spawn_app(b).await);
    let user = app.new_user().await;
    app.create_model(&user, "a", "m", 64, 8, false).await;
    let data = rows(1024, 64, 4);
    let expected = app.run(&user, "a", "m", &data).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (app, user, data) = (app.clone(), user.clone(), data.clone());
            tokio::spawn(async move {
                let mut outs = Vec::new();
                for _ in 0..10 {
                    outs.push(app.run(&user, "a", "m", &data).await);
                }
                outs
            })
        })
        .collect();
    for t in tasks {
        for out in t.await.unwrap() {
            assert_eq!(out, expected);
        }
    }
}

async fn sgt_clients_big_bodies_are_accepted(b: Backend) {
    let app = spawn_app(b).await;
    let user = app.new_user().await;
    app.create_model(&user, "a", "wide", 2048, 2, false).await;
    let data = rows(1024, 2048, 5);
    let body = serde_json::to_vec(&user.with(json!({"name": "wide", "app_name": "a", "data": data}))).unwrap();
    assert!(body.len() > 6_000_000, "a realistic body: {} bytes", body.len());
    let (status, out) = app.post_raw(RUN, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out.as_array().unwrap().len(), 1024);
    let pairs: Vec<Value> = rows(256, 2048, 6)
        .into_iter()
        .map(|x| json!([x, [0.5, -0.5]]))
        .collect();
    app.ok(
        UPLOAD,
        user.with(json!({"name": "wide", "app_name": "a", "train_data": pairs})),
    )
    .await;
    // Stop the background training this upload started before the test ends.
    app.ok(DELETE, user.with(json!({"name": "wide", "app_name": "a"})))
        .await;
}

async fn guessing_secrets_from_one_address_is_cut_off_before_the_slow_hash(b: Backend) {
    let app = spawn_app(b).await;
    let (known, fresh) = (app.new_user().await, app.new_user().await);
    // Verified once before the guessing starts: a working client is not locked out.
    assert_eq!(app.ok(CHECK, known.creds()).await, json!(true));
    let guess = |key: &str| json!({"secret_id": fresh.id, "secret_key": key});
    for n in 0..20 {
        assert_eq!(
            app.ok(CHECK, guess(&format!("guess-{n}"))).await,
            json!(false),
            "guess {n}"
        );
    }
    // Past the limit nothing is verified, not even the right key, on any route.
    let throttled = app.fails(CHECK, guess("guess-20"), "AuthException").await;
    assert!(throttled.contains("too many failed"), "{throttled}");
    app.fails(CHECK, fresh.creds(), "AuthException").await;
    app.fails(MINE, fresh.creds(), "AuthException").await;
    app.fails(CREATE, guess("x"), "AuthException").await;
    assert_eq!(app.ok(CHECK, known.creds()).await, json!(true));
    assert!(app.my_models(&known).await.is_empty());
    // The same secret presented to /api/v1 as an API key is the same record, and as throttled.
    let as_api_key = format!("mk_{}.{}", fresh.id, fresh.key);
    let (s, v, _) = app.call(Method::GET, "/api/v1/users/me", Some(&as_api_key), None).await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!("TOO_MANY_REQUESTS")),
        "{v}"
    );
}
