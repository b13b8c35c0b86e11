//! `/api/v1` identity and access, end to end over HTTP on both backends.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::sgt::{CLIENT_DATA, CLONE, CREATE, DELETE, MINE, RUN, UPDATE, UPLOAD};
use crate::support::{rows, spawn_app, spawn_with, Backend, TestApp, User, ADMIN_EMAIL, ADMIN_PASSWORD};

on_both_backends!(
    a_user_registers_signs_in_three_ways_and_reads_their_profile,
    bad_sign_up_input_gets_named_field_errors_and_stores_nothing,
    eight_concurrent_sign_ups_with_one_username_yield_exactly_one_account,
    every_forged_or_stale_token_is_rejected,
    a_reused_refresh_token_revokes_its_session,
    changing_the_password_revokes_every_session,
    api_keys_work_in_both_apis_and_only_within_their_permissions,
    users_cannot_see_or_touch_each_others_resources,
    rate_limits_count_down_in_headers_and_end_in_429,
    repeated_failed_sign_ins_lock_the_account_without_revealing_it,
    admins_manage_users_and_roles,
    the_openapi_document_describes_every_v1_route,
    a_users_keys_share_their_sgt_models_and_other_users_cannot_reach_them,
    managers_of_users_and_roles_cannot_grant_or_touch_more_than_they_hold,
    a_demoted_users_keys_lose_the_dropped_permissions_in_the_sgt_api_too,
    undecodable_path_parameters_are_refused_in_the_envelope,
    an_sgt_secret_cannot_take_a_platform_accounts_id,
    every_route_refuses_a_caller_without_its_permission,
    the_password_grant_refuses_bad_forms_in_the_envelope,
    a_platform_keys_sgt_calls_spend_its_users_rate_limits,
    a_platform_keys_sgt_calls_count_toward_the_monthly_quota,
    a_password_change_keeps_a_profile_edit_made_while_it_ran,
    of_two_concurrent_password_changes_exactly_one_takes_effect,
    a_password_change_racing_the_accounts_deletion_is_refused_as_signed_out,
);

pub const PASSWORD: &str = "Sturdy-Passw0rd!";

impl TestApp {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let text = r.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: non-JSON {status}: {text:?}"));
        (status, value, headers)
    }

    pub async fn v1(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, v, h) = self.call(method, path, token, body).await;
        assert!(h.contains_key("x-request-id"), "{path}: request id echoed");
        if v["success"] == false {
            assert_eq!(v["request_id"], h["x-request-id"].to_str().unwrap(), "{path}: {v}");
            assert!(
                v["error"]["code"].is_string() && v["error"]["details"].is_array(),
                "{path}: {v}"
            );
        }
        (s, v)
    }

    /// Registers and signs in a fresh user; returns (tokens data, username).
    pub async fn signed_up(&self) -> (Value, String) {
        let name = format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let body = json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD});
        let (s, v) = self.v1(Method::POST, "/api/v1/auth/register", None, Some(body)).await;
        assert_eq!(s, 201, "{v}");
        (self.login(&format!("{name}@example.com"), PASSWORD).await, name)
    }

    pub async fn login(&self, email: &str, password: &str) -> Value {
        let (s, v) = self
            .v1(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["data"].clone()
    }

    pub async fn admin(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A new API key of the signed-in user, as SGT credentials (`secret_id`, `secret_key`).
    pub async fn sgt_key(&self, access: &str, permissions: &[&str]) -> User {
        let body = json!({"name": "sgt", "permissions": permissions});
        let (s, v) = self
            .v1(Method::POST, "/api/v1/users/me/api-keys", Some(access), Some(body))
            .await;
        assert_eq!(s, 201, "{v}");
        let key = v["data"]["key"].as_str().unwrap().trim_start_matches("mk_");
        let (id, secret) = key.split_once('.').unwrap();
        User {
            id: id.into(),
            key: secret.into(),
        }
    }

    /// What `/permissions/check` answers to `body`, asked with `token`.
    async fn allowed(&self, token: &str, body: Value) -> bool {
        let (s, v) = self
            .v1(Method::POST, "/api/v1/permissions/check", Some(token), Some(body))
            .await;
        assert_eq!(s, 200, "{v}");
        v["data"]["allowed"].as_bool().unwrap()
    }

    fn jwt_key(&self) -> (String, Vec<u8>) {
        use base64::Engine;
        let spec = std::fs::read_to_string(self.dir().join("jwt-keys")).unwrap();
        let (kid, secret) = spec.trim().split_once('=').unwrap();
        (
            kid.into(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(secret).unwrap(),
        )
    }
}

fn token(v: &Value) -> &str {
    v["access_token"].as_str().unwrap()
}

/// The user id in sign-in data.
fn user_id(v: &Value) -> &str {
    v["user"]["id"].as_str().unwrap()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

async fn a_user_registers_signs_in_three_ways_and_reads_their_profile(b: Backend) {
    let app = spawn_app(b).await;
    let (t, name) = app.signed_up().await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["user"]["roles"], json!(["user"]));
    let (s, me) = app.v1(Method::GET, "/api/v1/users/me", Some(token(&t)), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            me["success"].clone(),
            me["code"].clone(),
            me["data"]["username"].clone()
        ),
        (json!(true), json!(200), json!(name))
    );
    assert!(me["timestamp"].as_str().unwrap().ends_with('Z') && me["request_id"].is_string());
    assert!(me["data"]["quota"]["api_calls_used"].as_i64().unwrap() >= 1);
    let (_, auth_me) = app.v1(Method::GET, "/api/v1/auth/me", Some(token(&t)), None).await;
    assert_eq!(auth_me["data"]["id"], me["data"]["id"]);
    // Seed 004's shape, by username.
    let (s, legacy) = app
        .v1(
            Method::POST,
            "/api/v1/login",
            None,
            Some(json!({"username": name, "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, 200, "{legacy}");
    assert!(legacy["data"]["token"].as_str().unwrap().starts_with("eyJ"));
    // Seed 002's OAuth2 password grant, form-encoded, by username.
    let r = app
        .client
        .post(format!("{}/api/v1/auth/token", app.url))
        .form(&[
            ("username", name.as_str()),
            ("password", PASSWORD),
            ("grant_type", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["data"]["access_token"].is_string());
    // Profile changes stick; bad ones are named.
    let (s, v) = app
        .v1(
            Method::PUT,
            "/api/v1/users/me",
            Some(token(&t)),
            Some(json!({"first_name": "Ada", "organization": "Lab"})),
        )
        .await;
    assert_eq!((s, v["data"]["first_name"].clone()), (StatusCode::OK, json!("Ada")));
    let (s, v) = app
        .v1(
            Method::PUT,
            "/api/v1/users/me",
            Some(token(&t)),
            Some(json!({"first_name": "x".repeat(101)})),
        )
        .await;
    assert_eq!(
        (s, code(&v), v["error"]["details"][0]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_003", json!("first_name"))
    );
    let (s, v) = app
        .v1(Method::GET, "/api/v1/users/me/stats?period=7d", Some(token(&t)), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["data"]["total_calls"].as_i64().unwrap() >= 3, "{v}");
    let (s, v) = app
        .v1(
            Method::GET,
            "/api/v1/users/me/api-usage?start_date=2026-13-01&end_date=2026-01-01",
            Some(token(&t)),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_002"));
    for (query, want) in [
        ("stats?period=0d", "VALIDATION_003"),
        ("stats?period=367d", "VALIDATION_003"),
        ("stats?period=week", "VALIDATION_002"),
        ("api-usage?end_date=2026-01-01", "VALIDATION_001"),
        ("api-usage?start_date=2026-01-01&end_date=2027-06-01", "VALIDATION_003"),
    ] {
        let path = format!("/api/v1/users/me/{query}");
        let (s, v) = app.v1(Method::GET, &path, Some(token(&t)), None).await;
        assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, want), "{query}: {v}");
    }
    let (s, v) = app.v1(Method::GET, "/api/v1/system/health", None, None).await;
    assert_eq!((s, v["data"]["status"].clone()), (StatusCode::OK, json!("ok")));
    let (s, v) = app.v1(Method::GET, "/api/v1/no/such/route", None, None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "RESOURCE_001"));
}

async fn bad_sign_up_input_gets_named_field_errors_and_stores_nothing(b: Backend) {
    let app = spawn_app(b).await;
    let reg = "/api/v1/auth/register";
    let cases = [
        (
            json!({"email": "a@example.com", "password": PASSWORD}),
            422,
            "VALIDATION_001",
            "username",
        ),
        (
            json!({"username": "alice", "email": 7, "password": PASSWORD}),
            422,
            "VALIDATION_002",
            "email",
        ),
        (
            json!({"username": "alice", "email": "not-an-email", "password": PASSWORD}),
            422,
            "VALIDATION_002",
            "email",
        ),
        (
            json!({"username": "alice", "email": "a@example.com", "password": "short"}),
            422,
            "VALIDATION_003",
            "password",
        ),
        (
            json!({"username": "alice", "email": "a@example.com", "password": "alice-Passw0rd"}),
            422,
            "VALIDATION_003",
            "password",
        ),
        (
            json!({"username": "a", "email": "a@example.com", "password": PASSWORD}),
            422,
            "VALIDATION_002",
            "username",
        ),
    ];
    for (body, status, c, field) in cases {
        let (s, v) = app.v1(Method::POST, reg, None, Some(body.clone())).await;
        assert_eq!(
            (
                s.as_u16(),
                code(&v),
                v["error"]["details"][0]["field"].as_str().unwrap_or_default()
            ),
            (status, c, field),
            "{body}: {v}"
        );
    }
    let r = app
        .client
        .post(format!("{}{reg}", app.url))
        .header("content-type", "application/json")
        .body("{\"username\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "VALIDATION_002");
    let huge = json!({"username": "alice", "email": "a@example.com", "password": PASSWORD, "organization": "x".repeat(2 << 20)});
    let (s, v) = app.v1(Method::POST, reg, None, Some(huge)).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "VALIDATION_003"));
    // Nothing was stored: alice can still register.
    let (s, v) = app
        .v1(
            Method::POST,
            reg,
            None,
            Some(json!({"username": "alice", "email": "a@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .v1(
            Method::POST,
            reg,
            None,
            Some(json!({"username": "ALICE", "email": "b@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (s, code(&v), v["error"]["details"][0]["field"].clone()),
        (StatusCode::CONFLICT, "RESOURCE_002", json!("username"))
    );
    let (s, v) = app
        .v1(
            Method::POST,
            reg,
            None,
            Some(json!({"username": "bob", "email": "A@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["details"][0]["field"].clone()),
        (StatusCode::CONFLICT, json!("email"))
    );
}

async fn eight_concurrent_sign_ups_with_one_username_yield_exactly_one_account(b: Backend) {
    let app = spawn_app(b).await;
    let attempts = (0..8).map(|i| {
        let body = json!({"username": "racer", "email": format!("racer{i}@example.com"), "password": PASSWORD});
        app.call(Method::POST, "/api/v1/auth/register", None, Some(body))
    });
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|(s, _, _)| s.as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 7, "{statuses:?}");
}

async fn every_forged_or_stale_token_is_rejected(b: Backend) {
    let app = spawn_app(b).await;
    let (t, _) = app.signed_up().await;
    let good = token(&t).to_string();
    let claims: Value = {
        use base64::Engine;
        let payload = good.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let (kid, secret) = app.jwt_key();
    let sign = |alg: Algorithm, kid: &str, key: &[u8], patch: Value| {
        let mut c = claims.clone();
        c.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        let header = Header {
            kid: Some(kid.into()),
            ..Header::new(alg)
        };
        encode(&header, &c, &EncodingKey::from_secret(key)).unwrap()
    };
    let now = maas_store::now_secs();
    let unsigned = {
        use base64::Engine;
        let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            e(json!({"alg": "none", "typ": "JWT", "kid": kid})),
            e(claims.clone())
        )
    };
    // An HS256-signed body relabelled RS256: a verifier that trusts the header would check it
    // against a public key; this one refuses the algorithm.
    let rs_confusion = {
        use base64::Engine;
        let signed = sign(Algorithm::HS256, &kid, &secret, json!({}));
        let (_, rest) = signed.split_once('.').unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string());
        format!("{header}.{rest}")
    };
    let cases = [
        ("alg none", unsigned, "AUTH_001"),
        ("HS/RS confusion", rs_confusion, "AUTH_001"),
        (
            "wrong kid",
            sign(Algorithm::HS256, "other-kid", &secret, json!({})),
            "AUTH_001",
        ),
        (
            "wrong signature",
            sign(
                Algorithm::HS256,
                &kid,
                b"an-entirely-different-secret-key-32b!",
                json!({}),
            ),
            "AUTH_001",
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                &kid,
                &secret,
                json!({"exp": now - 60, "nbf": now - 120}),
            ),
            "AUTH_002",
        ),
        (
            "not yet valid",
            sign(Algorithm::HS256, &kid, &secret, json!({"nbf": now + 600})),
            "AUTH_001",
        ),
        (
            "wrong audience",
            sign(Algorithm::HS256, &kid, &secret, json!({"aud": "someone-else"})),
            "AUTH_001",
        ),
        ("garbage", "not.a.token".to_string(), "AUTH_001"),
    ];
    for (what, tok, c) in cases {
        let (s, v) = app.v1(Method::GET, "/api/v1/users/me", Some(&tok), None).await;
        assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, c), "{what}: {v}");
    }
    let (s, v) = app.v1(Method::GET, "/api/v1/users/me", None, None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "AUTH_001"));
    // The untampered token still works; after logout it is revoked.
    assert_eq!(app.v1(Method::GET, "/api/v1/users/me", Some(&good), None).await.0, 200);
    assert_eq!(
        app.v1(Method::POST, "/api/v1/auth/logout", Some(&good), None).await.0,
        200
    );
    let (s, v) = app.v1(Method::GET, "/api/v1/users/me", Some(&good), None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "AUTH_001"), "revoked: {v}");
}

async fn a_reused_refresh_token_revokes_its_session(b: Backend) {
    let app = spawn_app(b).await;
    let (t, _) = app.signed_up().await;
    let first = t["refresh_token"].as_str().unwrap();
    let (s, next) = app
        .v1(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": first})),
        )
        .await;
    assert_eq!(s, 200, "{next}");
    assert_ne!(next["data"]["refresh_token"], t["refresh_token"], "rotated");
    let new_access = next["data"]["access_token"].as_str().unwrap();
    assert_eq!(
        app.v1(Method::GET, "/api/v1/users/me", Some(new_access), None).await.0,
        200
    );
    // Replaying the first refresh token revokes the family: the rotated tokens die too.
    let (s, v) = app.v1(Method::POST, "/api/v1/auth/refresh", Some(first), None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "AUTH_001"));
    let second = next["data"]["refresh_token"].as_str().unwrap();
    assert_eq!(
        app.v1(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": second}))
        )
        .await
        .0,
        401
    );
    assert_eq!(
        app.v1(Method::GET, "/api/v1/users/me", Some(new_access), None).await.0,
        401
    );
    // The token may come in Authorization with an empty or `null` body.
    let (t2, _) = app.signed_up().await;
    let fresh = t2["refresh_token"].as_str().unwrap();
    let (s, v) = app
        .v1(Method::POST, "/api/v1/auth/refresh", Some(fresh), Some(Value::Null))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app
        .v1(Method::POST, "/api/v1/auth/refresh", None, Some(json!({})))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_001"));
    let (s, v) = app
        .v1(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": 7})),
        )
        .await;
    assert_eq!(
        (s, code(&v), v["error"]["details"][0]["field"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_002",
            json!("refresh_token")
        )
    );
}

async fn changing_the_password_revokes_every_session(b: Backend) {
    let app = spawn_app(b).await;
    let (t1, name) = app.signed_up().await;
    let t2 = app.login(&format!("{name}@example.com"), PASSWORD).await;
    let new = "Another-Passw0rd?";
    let (s, v) = app
        .v1(
            Method::PUT,
            "/api/v1/users/me/password",
            Some(token(&t1)),
            Some(json!({"current_password": "wrong", "new_password": new})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "AUTH_004"));
    let (s, v) = app
        .v1(
            Method::PUT,
            "/api/v1/users/me/password",
            Some(token(&t1)),
            Some(json!({"current_password": PASSWORD, "new_password": new})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for t in [&t1, &t2] {
        assert_eq!(
            app.v1(Method::GET, "/api/v1/users/me", Some(token(t)), None).await.0,
            401
        );
    }
    let (s, _) = app
        .v1(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": format!("{name}@example.com"), "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, 401);
    app.login(&format!("{name}@example.com"), new).await;
}

async fn a_password_change_keeps_a_profile_edit_made_while_it_ran(b: Backend) {
    let app = spawn_app(b).await;
    let (t, name) = app.signed_up().await;
    // The edit goes through an API key, which a password change does not sign out.
    let body = json!({"name": "editor", "permissions": ["profile:read", "profile:write"]});
    let (_, created) = app
        .v1(Method::POST, "/api/v1/users/me/api-keys", Some(token(&t)), Some(body))
        .await;
    let key = created["data"]["key"].as_str().unwrap();
    let new = "Another-Passw0rd?";
    // The password change spends two slow password hashes before it writes: the edit, sent
    // with it, lands in between and changes the record under it.
    let change = json!({"current_password": PASSWORD, "new_password": new});
    let ((changed, v), (edited, _)) = tokio::join!(
        app.v1(Method::PUT, "/api/v1/users/me/password", Some(token(&t)), Some(change)),
        app.v1(
            Method::PUT,
            "/api/v1/users/me",
            Some(key),
            Some(json!({"organization": "Edited meanwhile"}))
        ),
    );
    assert_eq!((changed, edited), (StatusCode::OK, StatusCode::OK), "{v}");
    let (_, me) = app.v1(Method::GET, "/api/v1/users/me", Some(key), None).await;
    assert_eq!(me["data"]["organization"], "Edited meanwhile");
    app.login(&format!("{name}@example.com"), new).await;
}

async fn of_two_concurrent_password_changes_exactly_one_takes_effect(b: Backend) {
    let app = spawn_app(b).await;
    let (t, name) = app.signed_up().await;
    let change = |new: &str| {
        let body = json!({"current_password": PASSWORD, "new_password": new});
        app.v1(Method::PUT, "/api/v1/users/me/password", Some(token(&t)), Some(body))
    };
    let passwords = ["Another-Passw0rd?", "Yet-Another-Passw0rd!"];
    let ((s1, v1), (s2, v2)) = tokio::join!(change(passwords[0]), change(passwords[1]));
    // The loser either lost the write (409) or was signed out by the winner before it was
    // authenticated (401).
    let (won, lost, loser) = match (s1, s2) {
        (StatusCode::OK, s) => (passwords[0], passwords[1], (s, v2)),
        (s, StatusCode::OK) => (passwords[1], passwords[0], (s, v1)),
        _ => panic!("no change won: {v1} {v2}"),
    };
    assert!(matches!(loser.0.as_u16(), 409 | 401), "{}", loser.1);
    let email = format!("{name}@example.com");
    app.login(&email, won).await;
    for password in [lost, PASSWORD] {
        let body = json!({"email": email, "password": password});
        let (s, _) = app.v1(Method::POST, "/api/v1/auth/login", None, Some(body)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
}

async fn a_password_change_racing_the_accounts_deletion_is_refused_as_signed_out(b: Backend) {
    let app = spawn_app(b).await;
    let admin = app.admin().await;
    let (t, name) = app.signed_up().await;
    let delete = format!("/api/v1/users/{}", t["user"]["id"].as_str().unwrap());
    let change = json!({"current_password": PASSWORD, "new_password": "Another-Passw0rd?"});
    // The deletion lands while the change hashes, or before it is authenticated: either way
    // the account and its sessions are gone, and so is the change.
    let ((changed, v), (deleted, _)) = tokio::join!(
        app.v1(Method::PUT, "/api/v1/users/me/password", Some(token(&t)), Some(change)),
        app.v1(Method::DELETE, &delete, Some(&admin), None),
    );
    assert_eq!(
        (changed, code(&v), deleted),
        (StatusCode::UNAUTHORIZED, "AUTH_001", StatusCode::OK)
    );
    let body = json!({"email": format!("{name}@example.com"), "password": "Another-Passw0rd?"});
    let (s, _) = app.v1(Method::POST, "/api/v1/auth/login", None, Some(body)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

async fn api_keys_work_in_both_apis_and_only_within_their_permissions(b: Backend) {
    let app = spawn_app(b).await;
    let (t, _) = app.signed_up().await;
    let tok = token(&t);
    let body =
        json!({"name": "reader", "permissions": ["model:read", "profile:read"], "expires_at": "2030-01-01T00:00:00Z"});
    let (s, created) = app
        .v1(Method::POST, "/api/v1/users/me/api-keys", Some(tok), Some(body))
        .await;
    assert_eq!(s, 201, "{created}");
    let key = created["data"]["key"].as_str().unwrap().to_string();
    let id = created["data"]["id"].as_str().unwrap().to_string();
    // Bearer and X-API-Key both work, within the key's permissions.
    assert_eq!(app.v1(Method::GET, "/api/v1/users/me", Some(&key), None).await.0, 200);
    let r = app
        .client
        .get(format!("{}/api/v1/users/me", app.url))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An empty X-API-Key carries no credential; two different credentials are refused.
    for (x_api_key, status) in [("", 200), (key.as_str(), 200), (tok, 401)] {
        let r = app
            .client
            .get(format!("{}/api/v1/users/me", app.url))
            .bearer_auth(&key)
            .header("x-api-key", x_api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "X-API-Key {x_api_key:?} beside a bearer key");
    }
    let not_text = reqwest::header::HeaderValue::from_bytes(b"mk_\xff").unwrap();
    let r = app
        .client
        .get(format!("{}/api/v1/users/me", app.url))
        .header("x-api-key", not_text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an X-API-Key that is not text");
    let (s, v) = app.v1(Method::GET, "/api/v1/users/me/api-keys", Some(&key), None).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "AUTH_003"));
    // A key cannot grant what its user lacks, nor name unknown permissions or a past expiry.
    for (body, status, c) in [
        (
            json!({"name": "x", "permissions": ["users:write"]}),
            StatusCode::FORBIDDEN,
            "AUTH_003",
        ),
        (
            json!({"name": "x", "permissions": ["nope"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_003",
        ),
        (
            json!({"name": "x", "permissions": ["model:read"], "expires_at": "2001-01-01T00:00:00Z"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_003",
        ),
    ] {
        let (s, v) = app
            .v1(Method::POST, "/api/v1/users/me/api-keys", Some(tok), Some(body.clone()))
            .await;
        assert_eq!((s, code(&v)), (status, c), "{body}");
    }
    // The list never shows secrets.
    let (_, list) = app.v1(Method::GET, "/api/v1/users/me/api-keys", Some(tok), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(key.split('.').nth(1).unwrap()));
    // The same key is an SGT credential: it reads models, but may not create them.
    let (secret_id, secret_key) = key.trim_start_matches("mk_").split_once('.').unwrap();
    let creds = json!({"secret_id": secret_id, "secret_key": secret_key});
    assert_eq!(app.ok("/sgt/public/check_auth_token", creds.clone()).await, json!(true));
    assert_eq!(app.ok("/sgt/public/read_my_sgt_model", creds.clone()).await, json!([]));
    let mut create = creds.clone();
    create.as_object_mut().unwrap().extend(json!({"name": "m", "app_name": "a", "model_type": "std", "client_data": "", "in_size": 2, "out_size": 1, "is_public": false}).as_object().unwrap().clone());
    app.fails("/sgt/public/create_sgt_model", create, "AuthException").await;
    // An expired key is refused (expired through the SGT system route, which keeps its owner).
    app.ok("/sgt/private/update_auth_token", json!({"key": app.system_key, "secret_id": secret_id, "secret_key": secret_key, "doc": "x", "end_time": "2001-01-01 00:00:00"})).await;
    let (s, v) = app.v1(Method::GET, "/api/v1/users/me", Some(&key), None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "AUTH_004"));
    // Deleting a key stops it.
    assert_eq!(
        app.v1(
            Method::DELETE,
            &format!("/api/v1/users/me/api-keys/{id}"),
            Some(tok),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        app.v1(
            Method::DELETE,
            &format!("/api/v1/users/me/api-keys/{id}"),
            Some(tok),
            None
        )
        .await
        .0,
        404
    );
}

async fn users_cannot_see_or_touch_each_others_resources(b: Backend) {
    let app = spawn_app(b).await;
    let (a, _) = app.signed_up().await;
    let (bt, _) = app.signed_up().await;
    let (_, created) = app
        .v1(
            Method::POST,
            "/api/v1/users/me/api-keys",
            Some(token(&a)),
            Some(json!({"name": "a's", "permissions": ["model:read"]})),
        )
        .await;
    let a_key = created["data"]["id"].as_str().unwrap();
    let a_id = a["user"]["id"].as_str().unwrap();
    let (s, v) = app
        .v1(
            Method::DELETE,
            &format!("/api/v1/users/me/api-keys/{a_key}"),
            Some(token(&bt)),
            None,
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "RESOURCE_001"),
        "looks missing to B"
    );
    let (_, list) = app
        .v1(Method::GET, "/api/v1/users/me/api-keys", Some(token(&bt)), None)
        .await;
    assert_eq!(list["data"], json!([]));
    for (m, path) in [
        (Method::GET, format!("/api/v1/users/{a_id}")),
        (Method::PUT, format!("/api/v1/users/{a_id}")),
        (Method::DELETE, format!("/api/v1/users/{a_id}")),
        (Method::GET, "/api/v1/users".to_string()),
        (Method::POST, "/api/v1/permissions/roles".to_string()),
    ] {
        let (s, v) = app.v1(m.clone(), &path, Some(token(&bt)), Some(json!({}))).await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "AUTH_003"), "{m} {path}");
    }
    let (s, v) = app
        .v1(
            Method::POST,
            "/api/v1/permissions/check",
            Some(token(&bt)),
            Some(json!({"permission": "model:read", "user_id": a_id})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "AUTH_003"));
    // A's key still works: B changed nothing.
    assert_eq!(
        app.v1(Method::GET, "/api/v1/users/me/api-keys", Some(token(&a)), None)
            .await
            .1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn rate_limits_count_down_in_headers_and_end_in_429(b: Backend) {
    let app = spawn_with(b, |c| c.identity.rate_other = "3/3600".parse().unwrap()).await;
    let (t, _) = app.signed_up().await;
    let mut remaining = vec![];
    for _ in 0..3 {
        let (s, _, h) = app.call(Method::GET, "/api/v1/users/me", Some(token(&t)), None).await;
        assert_eq!(s, 200);
        assert_eq!(h["x-ratelimit-limit"], "3");
        remaining.push(h["x-ratelimit-remaining"].to_str().unwrap().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let (s, v, h) = app.call(Method::GET, "/api/v1/users/me", Some(token(&t)), None).await;
    assert_eq!((s, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"));
    let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!(reset > maas_store::now_secs() && h.contains_key("retry-after"));
    // Another user has their own budget.
    let (other, _) = app.signed_up().await;
    assert_eq!(
        app.call(Method::GET, "/api/v1/users/me", Some(token(&other)), None)
            .await
            .0,
        200
    );
}

async fn repeated_failed_sign_ins_lock_the_account_without_revealing_it(b: Backend) {
    let app = spawn_app(b).await;
    let (_, name) = app.signed_up().await;
    let email = format!("{name}@example.com");
    let attempt = |email: String, pw: &'static str| {
        let app = &app;
        async move {
            app.v1(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": pw})),
            )
            .await
        }
    };
    let (s1, known) = attempt(email.clone(), "Wrong-Passw0rd!").await;
    let (s2, unknown) = attempt("nobody@example.com".into(), "Wrong-Passw0rd!").await;
    assert_eq!((s1, s2), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(
        known["error"]["message"], unknown["error"]["message"],
        "same answer either way"
    );
    for _ in 0..4 {
        attempt(email.clone(), "Wrong-Passw0rd!").await;
    }
    let (s, v) = attempt(email.clone(), PASSWORD).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
        "locked even with the right password"
    );
}

async fn admins_manage_users_and_roles(b: Backend) {
    let app = spawn_app(b).await;
    let admin = app.admin().await;
    let adm = Some(admin.as_str());
    let (s, v) = app.v1(Method::POST, "/api/v1/permissions/roles/init", adm, None).await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "user", "viewer"]);
    let role = json!({"name": "auditor", "description": "reads", "permissions": ["usage:read", "profile:read"]});
    assert_eq!(
        app.v1(Method::POST, "/api/v1/permissions/roles", adm, Some(role.clone()))
            .await
            .0,
        201
    );
    assert_eq!(
        app.v1(Method::POST, "/api/v1/permissions/roles", adm, Some(role))
            .await
            .0,
        409
    );
    let (s, v) = app
        .v1(
            Method::POST,
            "/api/v1/permissions/roles",
            adm,
            Some(json!({"name": "bad", "permissions": ["fly:away"]})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_003"));
    let new_user =
        json!({"username": "carol", "email": "carol@example.com", "password": PASSWORD, "roles": ["auditor"]});
    let (s, v) = app.v1(Method::POST, "/api/v1/users", adm, Some(new_user)).await;
    assert_eq!(s, 201, "{v}");
    let carol_id = v["data"]["user_id"].as_str().unwrap().to_string();
    let carol = app.login("carol@example.com", PASSWORD).await;
    let carols = token(&carol);
    assert!(app.allowed(carols, json!({"permission": "usage:read"})).await);
    assert!(!app.allowed(carols, json!({"permission": "model:read"})).await);
    let about_carol = json!({"permission": "usage:read", "user_id": carol_id});
    assert!(app.allowed(&admin, about_carol).await);
    let (s, v) = app.v1(Method::GET, "/api/v1/users?page=1&limit=1", adm, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["data"]["pagination"],
        json!({"page": 1, "limit": 1, "total": 2, "pages": 2})
    );
    let (s, v) = app.v1(Method::GET, "/api/v1/users?limit=abc", adm, None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_002"));
    for (query, field) in [("page=0", "page"), ("page=1000001", "page"), ("limit=101", "limit")] {
        let (s, v) = app.v1(Method::GET, &format!("/api/v1/users?{query}"), adm, None).await;
        let got = (s, code(&v), v["error"]["details"][0]["field"].as_str());
        assert_eq!(
            got,
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_003", Some(field)),
            "{query}"
        );
    }
    let (s, v) = app
        .v1(
            Method::PUT,
            &format!("/api/v1/users/{carol_id}"),
            adm,
            Some(json!({"roles": ["viewer"]})),
        )
        .await;
    assert_eq!((s, v["data"]["roles"].clone()), (StatusCode::OK, json!(["viewer"])));
    // A mistyped profile field is named in the error, as on every other body.
    let (s, v) = app
        .v1(
            Method::PUT,
            &format!("/api/v1/users/{carol_id}"),
            adm,
            Some(json!({"first_name": 7})),
        )
        .await;
    assert_eq!(
        (s, code(&v), v["error"]["details"][0]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_002", json!("first_name"))
    );
    assert_eq!(
        app.v1(Method::DELETE, "/api/v1/permissions/roles/auditor", adm, None)
            .await
            .0,
        200
    );
    assert_eq!(
        app.v1(Method::GET, "/api/v1/permissions/roles/auditor", adm, None)
            .await
            .0,
        404
    );
    assert_eq!(
        app.v1(Method::DELETE, &format!("/api/v1/users/{carol_id}"), adm, None)
            .await
            .0,
        200
    );
    assert_eq!(
        app.v1(Method::GET, &format!("/api/v1/users/{carol_id}"), adm, None)
            .await
            .0,
        404
    );
    assert_eq!(
        app.v1(Method::GET, "/api/v1/users/me", Some(token(&carol)), None)
            .await
            .0,
        401,
        "deleted users' sessions end"
    );
    // An admin can neither delete nor demote themselves (the platform keeps an admin).
    let me = app.v1(Method::GET, "/api/v1/users/me", adm, None).await.1["data"]["id"].clone();
    let me = me.as_str().unwrap();
    let (s, v) = app.v1(Method::DELETE, &format!("/api/v1/users/{me}"), adm, None).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "RESOURCE_003"));
    let (s, v) = app
        .v1(
            Method::PUT,
            &format!("/api/v1/users/{me}"),
            adm,
            Some(json!({"roles": ["user"]})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_003"));
    assert_eq!(
        app.v1(Method::GET, "/api/v1/users/me", adm, None).await.1["data"]["roles"],
        json!(["admin"])
    );
}

async fn the_openapi_document_describes_every_v1_route(b: Backend) {
    let app = spawn_app(b).await;
    let (s, doc, _) = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for r in maas_functions::ROUTES.iter().filter(|r| r.path.starts_with("/api/v1/")) {
        let op = &doc["paths"][r.path][r.method.to_lowercase()];
        assert!(op.is_object(), "{} {} missing", r.method, r.path);
        assert!(
            op["responses"]["500"].is_object() && op["responses"]["429"].is_object(),
            "{}",
            r.name
        );
        // Every PUT is an optimistic read-modify-write, which a concurrent change can refuse.
        if r.method == "PUT" {
            assert!(op["responses"]["409"].is_object(), "{}", r.name);
        }
        // Every body waits on the memory all bodies share, which may be spent.
        if op["requestBody"].is_object() {
            assert!(op["responses"]["503"].is_object(), "{}", r.name);
        }
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

async fn a_users_keys_share_their_sgt_models_and_other_users_cannot_reach_them(b: Backend) {
    let app = spawn_app(b).await;
    let all = ["model:read", "model:write", "dataset:write", "inference:create"];
    let (alice, _) = app.signed_up().await;
    let (bob, _) = app.signed_up().await;
    let (alice1, alice2) = (
        app.sgt_key(token(&alice), &all).await,
        app.sgt_key(token(&alice), &all).await,
    );
    let bob_key = app.sgt_key(token(&bob), &all).await;
    app.create_model(&alice1, "a", "private", 2, 1, false).await;
    // Models belong to the account, not to the key that made them.
    let mine = app.my_models(&alice2).await;
    assert_eq!((mine.len(), &mine[0]["user_unique_id"]), (1, &alice["user"]["id"]));
    let probe = rows(2, 2, 1);
    let answer = app.run(&alice2, "a", "private", &probe).await;
    // Bob, with a key as strong as Alice's, finds nothing to list, run, change, feed or delete.
    assert!(app.my_models(&bob_key).await.is_empty());
    let attempts = [
        (RUN, json!({"data": probe})),
        (CLIENT_DATA, json!({"client_data": "pwned"})),
        (UPLOAD, json!({"train_data": [[[0.0, 0.0], [0.5]]]})),
        (DELETE, json!({})),
    ];
    for (path, extra) in attempts {
        let mut body = json!({"name": "private", "app_name": "a"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        app.fails(path, bob_key.with(body), "FindModelException").await;
    }
    // Cloning it by Alice's id fails exactly as cloning a model that does not exist.
    let clone = |name: &str| json!({"new_name": "stolen", "app_name": "a", "author_unique_id": alice["user"]["id"], "name": name});
    let hidden = app
        .fails(CLONE, bob_key.with(clone("private")), "FindModelException")
        .await;
    let absent = app
        .fails(CLONE, bob_key.with(clone("nope")), "FindModelException")
        .await;
    assert_eq!(hidden.replace("private", "X"), absent.replace("nope", "X"));
    // Alice's model is as it was.
    assert_eq!(app.my_models(&alice1).await[0]["client_data"], "cd");
    assert_eq!(app.run(&alice1, "a", "private", &probe).await, answer);
}

async fn a_platform_keys_sgt_calls_spend_its_users_rate_limits(b: Backend) {
    let app = spawn_with(b, |c| {
        c.identity.rate_inference = "2/3600".parse().unwrap();
        c.identity.rate_other = "4/3600".parse().unwrap();
    })
    .await;
    let (t, _) = app.signed_up().await;
    let all = ["model:read", "model:write", "inference:create", "profile:read"];
    let key = app.sgt_key(token(&t), &all).await;
    app.create_model(&key, "a", "m", 2, 1, false).await;
    let run = key.with(json!({"app_name": "a", "name": "m", "data": rows(1, 2, 3)}));
    for _ in 0..2 {
        app.ok(RUN, run.clone()).await;
    }
    let message = app.fails(RUN, run.clone(), "ThrottlingException").await;
    assert!(message.starts_with("rate limit exceeded; retry in "), "{message}");
    // The "other" budget is the one /api/v1 spends: creating the key, then the model.
    let (s, _, h) = app
        .call(
            Method::GET,
            "/api/v1/users/me",
            Some(&format!("mk_{}.{}", key.id, key.key)),
            None,
        )
        .await;
    assert_eq!((s, h["x-ratelimit-remaining"].to_str().unwrap()), (StatusCode::OK, "1"));
    assert_eq!(app.my_models(&key).await.len(), 1);
    app.fails(MINE, key.creds(), "ThrottlingException").await;
    // Secrets made with the system key belong to no account and have no such budget.
    let operator = app.new_user().await;
    app.create_model(&operator, "a", "m", 2, 1, false).await;
    let run = operator.with(json!({"app_name": "a", "name": "m", "data": rows(1, 2, 3)}));
    for _ in 0..3 {
        app.ok(RUN, run.clone()).await;
    }
}

async fn a_platform_keys_sgt_calls_count_toward_the_monthly_quota(b: Backend) {
    let app = spawn_with(b, |c| c.identity.monthly_calls = 3).await;
    let (t, _) = app.signed_up().await;
    // One call: creating the key. Two more: creating and running the model.
    let key = app.sgt_key(token(&t), &["model:write", "inference:create"]).await;
    app.create_model(&key, "a", "m", 2, 1, false).await;
    let run = key.with(json!({"app_name": "a", "name": "m", "data": rows(1, 2, 3)}));
    app.ok(RUN, run.clone()).await;
    let message = app.fails(RUN, run, "ThrottlingException").await;
    assert_eq!(message, "monthly API call quota used up");
}

async fn managers_of_users_and_roles_cannot_grant_or_touch_more_than_they_hold(b: Backend) {
    let app = spawn_app(b).await;
    let admin = app.admin().await;
    let adm = Some(admin.as_str());
    let (s, v) = app.v1(Method::POST, "/api/v1/permissions/roles/init", adm, None).await;
    assert_eq!(s, 200, "{v}");
    // Manages users and roles, and holds what `viewer` grants: nothing more.
    let helpdesk = json!({"name": "helpdesk", "permissions": [
        "users:read", "users:write", "roles:read", "roles:write",
        "profile:read", "model:read", "deployment:read", "dataset:read", "project:read", "task:read", "finetune:read", "usage:read"]});
    let (s, v) = app
        .v1(Method::POST, "/api/v1/permissions/roles", adm, Some(helpdesk))
        .await;
    assert_eq!(s, 201, "{v}");
    let person = |name: &str, role: &str| json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD, "roles": [role]});
    let (s, v) = app
        .v1(Method::POST, "/api/v1/users", adm, Some(person("hank", "helpdesk")))
        .await;
    assert_eq!(s, 201, "{v}");
    let hank_id = v["data"]["user_id"].as_str().unwrap().to_string();
    let hank = app.login("hank@example.com", PASSWORD).await;
    let h = Some(token(&hank));
    let admin_id = user_id(&app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await).to_string();

    let refused = [
        (
            Method::POST,
            "/api/v1/users".to_string(),
            Some(person("mallory", "admin")),
        ),
        (
            Method::POST,
            "/api/v1/users".to_string(),
            Some(person("mallory", "user")),
        ),
        (
            Method::PUT,
            format!("/api/v1/users/{hank_id}"),
            Some(json!({"roles": ["helpdesk", "admin"]})),
        ),
        (
            Method::PUT,
            "/api/v1/permissions/roles/helpdesk".into(),
            Some(json!({"permissions": ["*"]})),
        ),
        (
            Method::POST,
            "/api/v1/permissions/roles".into(),
            Some(json!({"name": "root", "permissions": ["*"]})),
        ),
        (
            Method::PUT,
            format!("/api/v1/users/{admin_id}"),
            Some(json!({"first_name": "Pwned"})),
        ),
        (Method::DELETE, format!("/api/v1/users/{admin_id}"), None),
        (
            Method::PUT,
            "/api/v1/permissions/roles/admin".into(),
            Some(json!({"permissions": ["usage:read"]})),
        ),
        (Method::DELETE, "/api/v1/permissions/roles/admin".into(), None),
    ];
    for (method, path, body) in refused {
        let (s, v) = app.v1(method.clone(), &path, h, body).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "AUTH_003"),
            "{method} {path}: {v}"
        );
    }
    // Within what he holds he still works: a viewer is made, renamed and removed.
    let (s, v) = app
        .v1(Method::POST, "/api/v1/users", h, Some(person("vera", "viewer")))
        .await;
    assert_eq!(s, 201, "{v}");
    let vera = format!("/api/v1/users/{}", v["data"]["user_id"].as_str().unwrap());
    let (s, v) = app.v1(Method::PUT, &vera, h, Some(json!({"first_name": "Vera"}))).await;
    assert_eq!((s, &v["data"]["first_name"]), (StatusCode::OK, &json!("Vera")), "{v}");
    assert_eq!(app.v1(Method::DELETE, &vera, h, None).await.0, 200);
    // Nothing refused was stored.
    let (_, v) = app
        .v1(Method::GET, &format!("/api/v1/users/{hank_id}"), adm, None)
        .await;
    assert_eq!(v["data"]["roles"], json!(["helpdesk"]));
    let (_, v) = app
        .v1(Method::GET, &format!("/api/v1/users/{admin_id}"), adm, None)
        .await;
    assert_eq!(
        (&v["data"]["first_name"], &v["data"]["roles"]),
        (&json!(""), &json!(["admin"]))
    );
    let (_, v) = app.v1(Method::GET, "/api/v1/permissions/roles/admin", adm, None).await;
    assert_eq!(v["data"]["permissions"], json!(["*"]));
    let (_, v) = app.v1(Method::GET, "/api/v1/permissions/roles", adm, None).await;
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"root") && names.contains(&"helpdesk"), "{names:?}");
    let (_, v) = app
        .v1(Method::GET, "/api/v1/permissions/roles/helpdesk", adm, None)
        .await;
    assert!(
        !v["data"]["permissions"].as_array().unwrap().contains(&json!("*")),
        "{v}"
    );
}

async fn a_demoted_users_keys_lose_the_dropped_permissions_in_the_sgt_api_too(b: Backend) {
    let app = spawn_app(b).await;
    let admin = app.admin().await;
    let adm = Some(admin.as_str());
    let (t, name) = app.signed_up().await;
    let key = app
        .sgt_key(token(&t), &["model:read", "model:write", "inference:create"])
        .await;
    app.create_model(&key, "a", "before", 2, 1, false).await;
    let path = format!("/api/v1/users/{}", user_id(&t));
    let (s, v) = app
        .v1(Method::PUT, &path, adm, Some(json!({"roles": ["viewer"]})))
        .await;
    assert_eq!(s, 200, "{v}");
    // `viewer` keeps model:read and drops model:write and inference:create, for this key too.
    assert_eq!(app.my_models(&key).await.len(), 1, "{name} still reads");
    let create =
        json!({"name": "after", "app_name": "a", "model_type": "std", "in_size": 2, "out_size": 1, "is_public": false});
    let message = app.fails(CREATE, key.with(create), "AuthException").await;
    assert!(message.contains("model:write"), "{message}");
    app.fails(
        RUN,
        key.with(json!({"name": "before", "app_name": "a", "data": [[0.1, 0.2]]})),
        "AuthException",
    )
    .await;
    // Restored, the same key works again.
    let (s, _) = app.v1(Method::PUT, &path, adm, Some(json!({"roles": ["user"]}))).await;
    assert_eq!(s, 200);
    assert_eq!(app.run(&key, "a", "before", &rows(1, 2, 3)).await.len(), 1);
}

async fn undecodable_path_parameters_are_refused_in_the_envelope(b: Backend) {
    let app = spawn_app(b).await;
    let admin = app.admin().await;
    let adm = Some(admin.as_str());
    for (method, path) in [
        (Method::GET, "/api/v1/users/%FF"),
        (Method::PUT, "/api/v1/users/%C3%28"),
        (Method::DELETE, "/api/v1/users/%FF"),
        (Method::GET, "/api/v1/permissions/roles/%FF"),
        (Method::DELETE, "/api/v1/users/me/api-keys/%FF"),
        (Method::POST, "/api/v1/auth/oauth/%FF"),
    ] {
        let (s, v) = app.v1(method.clone(), path, adm, Some(json!({}))).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "VALIDATION_002"),
            "{method} {path}: {v}"
        );
    }
}

async fn an_sgt_secret_cannot_take_a_platform_accounts_id(b: Backend) {
    let app = spawn_app(b).await;
    let (t, _) = app.signed_up().await;
    let key = app.sgt_key(token(&t), &["model:read", "model:write"]).await;
    app.create_model(&key, "a", "mine", 2, 1, false).await;
    let account = user_id(&t);
    // Such a secret would own the account's models: refused, and nothing is stored.
    let squat =
        json!({"key": app.system_key, "secret_id": account, "secret_key": "k", "end_time": "2099-01-01 00:00:00"});
    let message = app.fails(UPDATE, squat, "ValidationException").await;
    assert!(message.contains("platform account"), "{message}");
    app.fails(MINE, json!({"secret_id": account, "secret_key": "k"}), "AuthException")
        .await;
    // Re-keying the account's own API key through the same route still works, and keeps its owner.
    let rekey =
        json!({"key": app.system_key, "secret_id": key.id, "secret_key": "rotated", "end_time": "2099-01-01 00:00:00"});
    app.ok(UPDATE, rekey).await;
    let mine = app
        .my_models(&User {
            id: key.id.clone(),
            key: "rotated".into(),
        })
        .await;
    assert_eq!((mine.len(), &mine[0]["user_unique_id"]), (1, &json!(account)));
}

async fn every_route_refuses_a_caller_without_its_permission(b: Backend) {
    use maas_functions::routes::ROUTES;
    use maas_functions::v1::guard::Access;
    let app = spawn_app(b).await;
    let admin = app.admin().await;
    let (t, _) = app.signed_up().await;
    let path = format!("/api/v1/users/{}", user_id(&t));
    let (s, _) = app
        .v1(Method::PUT, &path, Some(&admin), Some(json!({"roles": ["viewer"]})))
        .await;
    assert_eq!(s, 200);
    let viewer = maas_functions::v1::permissions::builtin("viewer").unwrap();
    let mut tested = 0;
    for route in ROUTES {
        let Access::Permission(needed) = route.access else {
            continue;
        };
        if viewer.iter().any(|p| p == needed) {
            continue;
        }
        // Ids that name nothing, and an empty body: the guard answers before either is read.
        let path = route.path.replace('{', "none-").replace('}', "");
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        if path.starts_with("/v1/") {
            // OpenAI's surface refuses in OpenAI's error shape.
            let (s, v, _) = app.call(method, &path, Some(token(&t)), Some(json!({}))).await;
            assert_eq!(
                (s, &v["error"]["type"]),
                (StatusCode::FORBIDDEN, &json!("permission_error")),
                "{path}: {v}"
            );
            assert!(v["error"]["message"].as_str().unwrap().contains(needed), "{v}");
            tested += 1;
            continue;
        }
        let (s, v) = app.v1(method, &path, Some(token(&t)), Some(json!({}))).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "AUTH_003"),
            "{} {path}: {v}",
            route.method
        );
        assert!(v["error"]["message"].as_str().unwrap().contains(needed), "{v}");
        tested += 1;
    }
    assert!(tested >= 15, "only {tested} routes need more than a viewer holds");
}

async fn the_password_grant_refuses_bad_forms_in_the_envelope(b: Backend) {
    let app = spawn_app(b).await;
    let (_, name) = app.signed_up().await;
    let form = |body: String| {
        app.client
            .post(format!("{}/api/v1/auth/token", app.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let cases = [
        (String::new(), StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_001"),
        (
            format!("username={name}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_001",
        ),
        (
            format!("grant_type=client_credentials&username={name}&password={PASSWORD}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_003",
        ),
        (
            format!("username={name}&password=wrong-{PASSWORD}"),
            StatusCode::UNAUTHORIZED,
            "AUTH_004",
        ),
        (
            format!("username={name}&password={}", "x".repeat(2 << 20)),
            StatusCode::BAD_REQUEST,
            "VALIDATION_003",
        ),
    ];
    for (body, status, code) in cases {
        let r = form(body.clone()).await.unwrap();
        assert_eq!(r.status(), status, "{:.80}", body);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{:.80}: {v}", body);
    }
    let r = form(format!(
        "grant_type=password&username={name}&password={}",
        urlencode(PASSWORD)
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
