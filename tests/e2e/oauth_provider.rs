//! A small OAuth 2.0 provider that a test serves on loopback. It knows one client, hands out
//! single-use codes that each stand for a userinfo document the test chose, and checks every
//! field of the code exchange the way a real provider would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};

pub const CLIENT_ID: &str = "maas-test-client";
pub const CLIENT_SECRET: &str = "maas-test-client-secret";
pub const REDIRECT_URI: &str = "https://app.example.com/callback";

#[derive(Default)]
struct Grants {
    /// code -> userinfo it signs in
    codes: HashMap<String, Value>,
    /// access token -> userinfo
    tokens: HashMap<String, Value>,
    /// Set to make userinfo answer this instead of the user.
    userinfo_failure: Option<(StatusCode, Value)>,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub url: String,
    grants: Arc<Mutex<Grants>>,
}

impl FakeProvider {
    pub async fn start() -> FakeProvider {
        let grants = Arc::new(Mutex::new(Grants::default()));
        let app = Router::new()
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(grants.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeProvider { url, grants }
    }

    /// The `MAAS_OAUTH_PROVIDERS` value that points maas at this provider under `name`.
    pub fn config(&self, name: &str) -> String {
        json!([{
            "name": name,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token_url": format!("{}/token", self.url),
            "userinfo_url": format!("{}/userinfo", self.url),
            "redirect_uri": REDIRECT_URI,
        }])
        .to_string()
    }

    /// A fresh code that signs in the user `userinfo` describes.
    pub fn code_for(&self, userinfo: Value) -> String {
        let code = uuid::Uuid::new_v4().simple().to_string();
        self.code_named(&code, userinfo);
        code
    }

    pub fn code_named(&self, code: &str, userinfo: Value) {
        self.grants.lock().unwrap().codes.insert(code.into(), userinfo);
    }

    /// Makes userinfo answer `status` with `body` from now on.
    pub fn fail_userinfo(&self, status: StatusCode, body: Value) {
        self.grants.lock().unwrap().userinfo_failure = Some((status, body));
    }
}

async fn token(
    State(grants): State<Arc<Mutex<Grants>>>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let client_ok = field("client_id") == CLIENT_ID && field("client_secret") == CLIENT_SECRET;
    if !client_ok {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"})));
    }
    let mut g = grants.lock().unwrap();
    let request_ok = field("grant_type") == "authorization_code" && field("redirect_uri") == REDIRECT_URI;
    // Codes are single use, as RFC 6749 §4.1.2 requires.
    match g.codes.remove(field("code")).filter(|_| request_ok) {
        Some(userinfo) => {
            let access = uuid::Uuid::new_v4().to_string();
            g.tokens.insert(access.clone(), userinfo);
            (
                StatusCode::OK,
                Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600})),
            )
        }
        None => (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))),
    }
}

async fn userinfo(State(grants): State<Arc<Mutex<Grants>>>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let g = grants.lock().unwrap();
    if let Some((status, body)) = &g.userinfo_failure {
        return (*status, Json(body.clone()));
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match g.tokens.get(bearer) {
        Some(info) => (StatusCode::OK, Json(info.clone())),
        None => (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_token"}))),
    }
}
