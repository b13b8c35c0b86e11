//! `POST /api/v1/auth/oauth/{provider}` against a provider the test serves on loopback.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::oauth_provider::FakeProvider;
use crate::on_both_backends;
use crate::support::{spawn_with, Backend, TestApp};

on_both_backends!(
    an_oauth_sign_in_creates_an_account_once_and_signs_into_it_after,
    oauth_sign_ins_refuse_bad_codes_bad_input_and_unknown_providers,
    an_oauth_email_that_belongs_to_a_password_account_is_refused_not_linked,
    a_provider_that_fails_gets_service_unavailable,
);

async fn app_on(b: Backend, provider: &FakeProvider) -> TestApp {
    let config = provider.config("acme");
    spawn_with(b, |c| c.identity.oauth_providers = Some(config)).await
}

fn ann() -> Value {
    json!({"sub": "acme-ann", "email": "ann@acme.io", "email_verified": true,
           "preferred_username": "ann", "given_name": "Ann", "family_name": "Lee"})
}

impl TestApp {
    async fn oauth(&self, provider: &str, body: Value) -> (StatusCode, Value) {
        self.v1(
            Method::POST,
            &format!("/api/v1/auth/oauth/{provider}"),
            None,
            Some(body),
        )
        .await
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

async fn an_oauth_sign_in_creates_an_account_once_and_signs_into_it_after(b: Backend) {
    let provider = FakeProvider::start().await;
    let app = app_on(b, &provider).await;
    let first_code = provider.code_for(ann());
    let (s, first) = app.oauth("acme", json!({"code": first_code})).await;
    assert_eq!(s, 200, "{first}");
    let access = first["data"]["access_token"].as_str().unwrap();
    let (_, me) = app.v1(Method::GET, "/api/v1/auth/me", Some(access), None).await;
    let profile = &me["data"];
    assert_eq!(
        (
            &profile["username"],
            &profile["email"],
            &profile["roles"],
            &profile["first_name"]
        ),
        (&json!("ann"), &json!("ann@acme.io"), &json!(["user"]), &json!("Ann"))
    );
    // The same identity signs into the same account, also when first sign-ins race.
    let codes: Vec<String> = (0..4).map(|_| provider.code_for(ann())).collect();
    let again = futures::future::join_all(codes.iter().map(|c| app.oauth("acme", json!({"code": c})))).await;
    for (s, v) in &again {
        assert_eq!((*s, &v["data"]["user"]["id"]), (StatusCode::OK, &profile["id"]), "{v}");
    }
    let racers = json!({"sub": "acme-race", "email": "race@acme.io", "login": "racer"});
    let codes: Vec<String> = (0..4).map(|_| provider.code_for(racers.clone())).collect();
    let raced = futures::future::join_all(codes.iter().map(|c| app.oauth("acme", json!({"code": c})))).await;
    let ids: std::collections::BTreeSet<String> = raced
        .iter()
        .map(|(s, v)| {
            assert_eq!(*s, 200, "{v}");
            v["data"]["user"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one account for one identity: {ids:?}");
    // A code works once; the account has no password to sign in with.
    let (s, v) = app.oauth("acme", json!({"code": first_code})).await;
    assert_eq!((s.as_u16(), code(&v)), (401, "AUTH_004"), "{v}");
    for password in ["", "Sturdy-Passw0rd!"] {
        let body = json!({"email": "ann@acme.io", "password": password});
        let (s, _) = app.v1(Method::POST, "/api/v1/auth/login", None, Some(body)).await;
        assert_eq!(s, 401);
    }
    // The session is an ordinary one: its refresh token rotates.
    let refresh = json!({"refresh_token": first["data"]["refresh_token"]});
    let (s, v) = app.v1(Method::POST, "/api/v1/auth/refresh", None, Some(refresh)).await;
    assert_eq!(s, 200, "{v}");
}

async fn oauth_sign_ins_refuse_bad_codes_bad_input_and_unknown_providers(b: Backend) {
    let provider = FakeProvider::start().await;
    let app = app_on(b, &provider).await;
    let good = provider.code_for(ann());
    let cases = [
        ("acme", json!({"code": "never-issued"}), 401, "AUTH_004"),
        // The provider checks the redirect URI against the authorization request's.
        (
            "acme",
            json!({"code": good, "redirect_uri": "https://evil.example/cb"}),
            401,
            "AUTH_004",
        ),
        ("nope", json!({"code": good}), 404, "RESOURCE_001"),
        ("acme", json!({}), 422, "VALIDATION_001"),
        ("acme", json!({"code": 7}), 422, "VALIDATION_002"),
        ("acme", json!({"code": "x".repeat(3000)}), 422, "VALIDATION_003"),
        ("acme", json!({"code": ""}), 422, "VALIDATION_003"),
        (
            "acme",
            json!({"code": "c", "code_verifier": "v".repeat(200)}),
            422,
            "VALIDATION_003",
        ),
    ];
    for (name, body, status, want) in cases {
        let (s, v) = app.oauth(name, body.clone()).await;
        assert_eq!((s.as_u16(), code(&v)), (status, want), "{name} {body}: {v}");
    }
    let (s, _) = app.post_raw("/api/v1/auth/oauth/acme", "{\"code\":").await;
    assert_eq!(s, 400);
    let unverified = provider.code_for(json!({"sub": "u", "email": "u@acme.io", "email_verified": false}));
    let (s, v) = app.oauth("acme", json!({"code": unverified})).await;
    assert_eq!((s.as_u16(), code(&v)), (422, "VALIDATION_003"), "{v}");
    let no_email = provider.code_for(json!({"sub": "n"}));
    let (s, v) = app.oauth("acme", json!({"code": no_email})).await;
    assert_eq!((s.as_u16(), code(&v)), (422, "VALIDATION_001"), "{v}");
    // None of that made an account.
    let admin = app.admin().await;
    let (_, users) = app.v1(Method::GET, "/api/v1/users", Some(&admin), None).await;
    assert_eq!(users["data"]["pagination"]["total"], 1, "{users}");
}

async fn an_oauth_email_that_belongs_to_a_password_account_is_refused_not_linked(b: Backend) {
    let provider = FakeProvider::start().await;
    let app = app_on(b, &provider).await;
    let (tokens, bob) = app.signed_up().await;
    let bob_email = format!("{bob}@example.com");
    let takeover = provider.code_for(json!({"sub": "acme-mallory", "email": bob_email, "preferred_username": "m"}));
    let (s, v) = app.oauth("acme", json!({"code": takeover})).await;
    assert_eq!((s.as_u16(), code(&v)), (409, "RESOURCE_002"), "{v}");
    // Bob's account is untouched and still signs in with its password.
    let again = app.login(&bob_email, "Sturdy-Passw0rd!").await;
    assert_eq!(again["user"]["id"], tokens["user"]["id"]);
    // A taken username is not refused: the new account gets a suffix.
    let namesake = provider.code_for(json!({"sub": "acme-bob2", "email": "bob2@acme.io", "preferred_username": bob}));
    let (s, v) = app.oauth("acme", json!({"code": namesake})).await;
    assert_eq!(s, 200, "{v}");
    let name = v["data"]["user"]["username"].as_str().unwrap();
    assert!(
        name.starts_with(&format!("{bob}-")) && name.len() > bob.len() + 1,
        "{name}"
    );
}

async fn a_provider_that_fails_gets_service_unavailable(b: Backend) {
    let provider = FakeProvider::start().await;
    let app = app_on(b, &provider).await;
    provider.fail_userinfo(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "down"}));
    let (s, v) = app.oauth("acme", json!({"code": provider.code_for(ann())})).await;
    assert_eq!((s.as_u16(), code(&v)), (503, "SERVICE_UNAVAILABLE"), "{v}");
    assert!(
        !v.to_string().contains("down"),
        "the provider's answer is not leaked: {v}"
    );
    // An answer over 64 KiB is refused unread, even a successful one.
    let mut huge = ann();
    huge["picture"] = json!("x".repeat(70 * 1024));
    provider.fail_userinfo(StatusCode::OK, huge);
    let (s, v) = app.oauth("acme", json!({"code": provider.code_for(ann())})).await;
    assert_eq!((s.as_u16(), code(&v)), (503, "SERVICE_UNAVAILABLE"), "{v}");
    // Nothing was created along the way.
    let admin = app.admin().await;
    let (_, users) = app.v1(Method::GET, "/api/v1/users", Some(&admin), None).await;
    assert_eq!(users["data"]["pagination"]["total"], 1, "{users}");
}
