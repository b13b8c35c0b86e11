//! What authenticating one request costs, in process on the embedded store (the gateway's
//! default): a JWT (signature and claims, then the session and user reads), an API key (the
//! record read and its SHA-256 check, then the user), and the argon2id verification that a
//! password sign-in pays. The baseline, measured in the same run, is one item read from the
//! same store. `cargo bench -p maas-functions --bench auth`; figures in BENCHMARKS.md.

use std::hint::black_box;

use axum::extract::State;
use axum::http::HeaderMap;
use criterion::{criterion_group, criterion_main, Criterion};
use maas_functions::config::{ApiConfig, IdentityArgs};
use maas_functions::v1::accounts::start_session;
use maas_functions::v1::api_keys::{self, NewApiKey};
use maas_functions::v1::envelope::ApiJson;
use maas_functions::v1::guard::authenticate;
use maas_functions::AppState;
use maas_store::records::identity::Unique;
use maas_store::{StoreConfig, Stores};

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "Sturdy-Passw0rd!x";

struct Fixture {
    state: AppState,
    jwt: HeaderMap,
    key: HeaderMap,
    password_hash: String,
    user_id: String,
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

async fn fixture(dir: &std::path::Path) -> Fixture {
    let store = StoreConfig::Embedded { dir: dir.to_path_buf() };
    let stores = Stores::open(&store).await.unwrap();
    let config = ApiConfig {
        store,
        sidecar: maas_sidecar_client::SidecarClient::new("http://127.0.0.1:9", "unused"),
        system_key: "unused".into(),
        body_limit: 1 << 20,
        identity: IdentityArgs {
            jwt_keys: Some(maas_functions::v1::tokens::TokenKeys::generate_spec()),
            admin_email: Some(EMAIL.into()),
            admin_password: Some(PASSWORD.into()),
            ..Default::default()
        },
    };
    let state = AppState::new(&stores, &config).await.unwrap();
    let user = state.v1.repo.user_by(Unique::Email, EMAIL).await.unwrap().unwrap();
    let tokens = start_session(&state, &user).await.unwrap();
    let jwt = bearer(&tokens.access_token);
    let who = authenticate(&state, &jwt, "127.0.0.1").await.unwrap();
    let new_key = NewApiKey {
        name: "bench".into(),
        permissions: vec!["profile:read".into()],
        expires_at: None,
    };
    let Ok(created) = api_keys::create(State(state.clone()), who, ApiJson(new_key)).await else {
        panic!("the bench key is created");
    };
    Fixture {
        key: bearer(&created.data.key),
        password_hash: user.password_hash.clone().unwrap(),
        user_id: user.user_id,
        state,
        jwt,
    }
}

fn auth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = rt.block_on(fixture(dir.path()));
    let mut g = c.benchmark_group("authenticate");
    g.bench_function("baseline: one store read", |b| {
        b.iter(|| rt.block_on(f.state.v1.repo.user(black_box(&f.user_id))).unwrap())
    });
    g.bench_function("JWT", |b| {
        b.iter(|| {
            rt.block_on(authenticate(&f.state, black_box(&f.jwt), "127.0.0.1"))
                .unwrap()
        })
    });
    g.bench_function("API key", |b| {
        b.iter(|| {
            rt.block_on(authenticate(&f.state, black_box(&f.key), "127.0.0.1"))
                .unwrap()
        })
    });
    g.finish();
    let mut g = c.benchmark_group("sign-in");
    g.sample_size(20);
    g.bench_function("argon2id verify (19 MiB, t=2, p=1)", |b| {
        b.iter(|| assert!(rt.block_on(f.state.verifier.verify_password(black_box(PASSWORD), &f.password_hash))))
    });
    g.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);
