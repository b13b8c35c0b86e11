//! SGT request bodies as the handlers receive them, credentials first. A body that cannot be
//! used is answered `AuthException` unless the credentials it carries check out, so a caller
//! learns nothing about a request before proving who they are (as on AWS's or OpenAI's APIs),
//! and a missing or mistyped secret is an `AuthException`, as in the original.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::requests::*;
use super::run_body::RunBody;
use crate::credentials::{self, Checked, THROTTLED};
use crate::http::{body_error, client_ip, parse_json, ClientIp, SgtBody, SgtError};
use crate::state::AppState;
use maas_store::records::sgt::Secret;

pub const BAD_SECRET: &str = "invalid or expired secret_id / secret_key";
pub const BAD_SYSTEM_KEY: &str = "invalid system key";

/// What a request's sender must prove before hearing what else is wrong with it.
pub enum Caller {
    /// The operator: `key` is the system key.
    System,
    /// A secret's holder: `secret_id` and `secret_key`.
    Secret,
}

/// An SGT request body and who may send it.
pub trait SgtRequest: DeserializeOwned + Send {
    const CALLER: Caller;
}

macro_rules! sent_by {
    ($caller:ident: $($t:ty),*) => { $(impl SgtRequest for $t { const CALLER: Caller = Caller::$caller; })* };
}
sent_by!(System: UpdateAuthToken);
sent_by!(Secret: Credentials, CreateModel, ModelAddress, UpdateClientData, CloneModel, UploadTrainData);

/// A JSON body parsed into `T`; see the module doc for what a failure answers.
pub struct SgtJson<T>(pub T);

impl<T: SgtRequest> FromRequest<AppState> for SgtJson<T> {
    type Rejection = SgtError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, SgtError> {
        let from = ClientIp(client_ip(req.extensions()));
        let SgtBody(body) = SgtBody::from_request(req, state).await?;
        match parse_json(&body) {
            Ok(value) => Ok(SgtJson(value)),
            Err(problem) => Err(refuse(state, &body, T::CALLER, problem, &from).await),
        }
    }
}

/// A run request's body, its rows read as it arrived (see [`RunBody`]).
pub struct SgtRunBody(pub RunBody);

impl FromRequest<AppState> for SgtRunBody {
    type Rejection = SgtError;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, SgtError> {
        let (mut body, share) = crate::body::read_into(req, |len| RunBody::new(len, RUN_VALUES_READ))
            .await
            .map_err(body_error)?;
        body.hold(share);
        Ok(SgtRunBody(body))
    }
}

/// The credentials a body claims, whatever else it holds; a field of the wrong type is absent.
#[derive(Deserialize)]
struct Claimed {
    key: Option<sonic_rs::Value>,
    secret_id: Option<sonic_rs::Value>,
    secret_key: Option<sonic_rs::Value>,
}

/// The answer to `body`, refused for `problem`: `AuthException` unless it carries the right
/// credentials for `caller`. A body that is not a JSON object, or not one [`parse_json`] reads,
/// keeps `problem`: there is no claim in it to check.
pub async fn refuse(state: &AppState, body: &[u8], caller: Caller, problem: SgtError, from: &ClientIp) -> SgtError {
    let Ok(claimed) = parse_json::<Claimed>(body) else {
        return problem;
    };
    let text = |v: &Option<sonic_rs::Value>| {
        v.as_ref()
            .and_then(|v| sonic_rs::JsonValueTrait::as_str(v))
            .map(str::to_owned)
    };
    let (id, key) = (text(&claimed.secret_id), text(&claimed.secret_key));
    match caller {
        Caller::System if text(&claimed.key).is_some_and(|k| is_system_key(state, &k)) => problem,
        Caller::System => SgtError::Auth(BAD_SYSTEM_KEY.into()),
        Caller::Secret => match (id, key) {
            (Some(id), Some(key)) => match check(state, &id, &key, from).await {
                Ok(Some(_)) => problem,
                Ok(None) => SgtError::Auth(BAD_SECRET.into()),
                Err(e) => e,
            },
            _ => SgtError::Auth(BAD_SECRET.into()),
        },
    }
}

/// The secret `id` names, when `key` is its key (`None` otherwise), or an `AuthException` when
/// the address is throttled.
pub async fn check(state: &AppState, id: &str, key: &str, from: &ClientIp) -> Result<Option<Secret>, SgtError> {
    match credentials::verify(state, id, key, &from.0).await? {
        Checked::Valid(secret) => Ok(Some(secret)),
        Checked::Invalid => Ok(None),
        Checked::Throttled => Err(SgtError::Auth(THROTTLED.into())),
    }
}

/// Whether `key` is the system key, compared in constant time.
pub fn is_system_key(state: &AppState, key: &str) -> bool {
    key.as_bytes().ct_eq(state.system_key.as_bytes()).into()
}
