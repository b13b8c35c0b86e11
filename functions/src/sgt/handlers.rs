//! The 11 SGT handlers. Each parses its body at the edge, authenticates, and does one thing.

use axum::extract::State;
use axum::response::Response;
use maas_sidecar_client::{CheckpointRef, ModelRef, SidecarError, MODEL_TYPES};
use maas_store::records::sgt::{AppendError, SgtModel};
use maas_store::StoreError;

use super::answer::rows_json;
use super::extract::{check, is_system_key, refuse, Caller, SgtJson, SgtRunBody, BAD_SECRET, BAD_SYSTEM_KEY};
use super::requests::*;
use super::rows::{parse_rows_prefix, split_data, Rows, RowsError};
use crate::auth::hash_secret;
use crate::http::{json_bytes, ok, parse_json, ClientIp, SgtError};
use crate::state::AppState;
use crate::v1::envelope::Code;
use crate::v1::guard::{key_principal, Principal};
use crate::v1::limits::{self, Class, Subject, QUOTA_USED_UP};

type Reply = Result<Response, SgtError>;

/// Authenticates a secret id/key pair and returns whose models it reaches. A key made through
/// `/api/v1` must hold `permission` as it would there: named by the key and granted by its
/// user's current roles.
async fn authenticate(
    state: &AppState,
    creds: &Credentials,
    permission: &str,
    from: &ClientIp,
) -> Result<String, SgtError> {
    let denied = || SgtError::Auth(BAD_SECRET.into());
    let secret = check(state, &creds.secret_id, &creds.secret_key, from)
        .await?
        .ok_or_else(denied)?;
    if secret.user_id.is_none() {
        return Ok(secret.secret_id);
    }
    let who = key_principal(state, secret).await?.ok_or_else(denied)?;
    if !who.grants.allows(permission) {
        return Err(SgtError::Auth(format!("this key lacks the {permission} permission")));
    }
    meter(state, &who, permission, from).await?;
    Ok(who.user.user_id)
}

/// Counts a platform API key's call against its user's rate limits and monthly quota, as the
/// same key's calls to `/api/v1` are, so the SGT routes are no way around them. Runs spend the
/// inference budget; everything else the "other" one.
async fn meter(state: &AppState, who: &Principal, permission: &str, from: &ClientIp) -> Result<(), SgtError> {
    let class = match permission {
        "inference:create" => Class::Inference,
        _ => Class::Other,
    };
    let subject = Subject {
        user_id: Some(&who.user.user_id),
        key_id: who.key_id(),
        ip: &from.0,
    };
    let verdict = limits::check(&state.v1.repo, &state.v1.limits, class, subject).await?;
    match verdict.over {
        None => Ok(()),
        Some(Code::Resource004) => Err(SgtError::Throttled(QUOTA_USED_UP.into())),
        Some(_) => Err(SgtError::Throttled(format!(
            "rate limit exceeded; retry in {} s",
            verdict.retry_after()
        ))),
    }
}

fn no_model(app_name: &str, name: &str) -> SgtError {
    SgtError::FindModel(format!("model {name:?} not found in app {app_name:?}"))
}

/// Finds one of the caller's own models.
async fn own_model(state: &AppState, owner: &str, m: &ModelAddress) -> Result<SgtModel, SgtError> {
    state
        .repo
        .get_model(owner, &m.app_name, &m.name)
        .await?
        .ok_or_else(|| no_model(&m.app_name, &m.name))
}

pub async fn update_auth_token(State(state): State<AppState>, SgtJson(req): SgtJson<UpdateAuthToken>) -> Reply {
    if !is_system_key(&state, &req.key) {
        return Err(SgtError::Auth(BAD_SYSTEM_KEY.into()));
    }
    identifier("secret_id", &req.secret_id)?;
    if req.secret_key.is_empty() || req.secret_key.len() > MAX_SECRET_LEN {
        return Err(SgtError::Validation(format!(
            "secret_key must be 1 to {MAX_SECRET_LEN} bytes"
        )));
    }
    let end_time = end_time(&req.end_time)?;
    let doc = req.doc.unwrap_or_default();
    free_text("doc", &doc)?;
    // Re-keying a platform API key keeps its owner and permissions.
    let existing = state.repo.get_secret(&req.secret_id).await?;
    // A secret without a user owns the models stored under its id, and so does a platform
    // account under its user id: one may not take the other's.
    let own_owner = existing.as_ref().is_none_or(|s| s.user_id.is_none());
    if own_owner && state.v1.repo.user(&req.secret_id).await?.is_some() {
        return Err(SgtError::Validation(format!(
            "secret_id {:?} is a platform account's id; choose another",
            req.secret_id
        )));
    }
    let hash = tokio::task::spawn_blocking(move || hash_secret(&req.secret_key))
        .await
        .map_err(SgtError::internal)?;
    let now = maas_store::now_secs();
    let secret = maas_store::records::sgt::Secret {
        secret_id: req.secret_id,
        hash,
        doc,
        end_time,
        updated_at: now,
        user_id: existing.as_ref().and_then(|s| s.user_id.clone()),
        permissions: existing.as_ref().and_then(|s| s.permissions.clone()),
        created_at: existing.as_ref().map_or(now, |s| s.created_at),
        ver: 0,
    };
    state.repo.put_secret(&secret).await?;
    Ok(ok(()))
}

pub async fn check_auth_token(
    State(state): State<AppState>,
    from: ClientIp,
    SgtJson(creds): SgtJson<Credentials>,
) -> Reply {
    let secret = check(&state, &creds.secret_id, &creds.secret_key, &from).await?;
    Ok(ok(secret.is_some()))
}

pub async fn create_model(State(state): State<AppState>, from: ClientIp, SgtJson(req): SgtJson<CreateModel>) -> Reply {
    let owner = authenticate(&state, &req.creds, "model:write", &from).await?;
    identifier("name", &req.name)?;
    identifier("app_name", &req.app_name)?;
    let client_data = client_data(req.client_data.as_ref())?;
    if !MODEL_TYPES.contains(&req.model_type.as_str()) {
        return Err(SgtError::CreateModel(format!(
            "unknown model_type {:?}; see list_model_type",
            req.model_type
        )));
    }
    for (field, v) in [("in_size", req.in_size), ("out_size", req.out_size)] {
        if v == 0 || v > MAX_DIM {
            return Err(SgtError::CreateModel(format!(
                "{field} must be between 1 and {MAX_DIM}"
            )));
        }
    }
    let model = SgtModel {
        model_id: uuid::Uuid::new_v4().to_string(),
        owner,
        app_name: req.app_name,
        name: req.name,
        model_type: req.model_type,
        client_data,
        in_size: req.in_size,
        out_size: req.out_size,
        is_public: req.is_public,
        seed: rand::random::<u32>() as u64,
        created_at: maas_store::now_secs(),
        checkpoint: None,
        data_version: 0,
        samples: 0,
        ver: 0,
    };
    match state.repo.create_model(&model).await {
        Ok(()) => Ok(ok(())),
        Err(StoreError::ConditionFailed) => Err(SgtError::CreateModel(format!(
            "model {:?} already exists in app {:?}",
            model.name, model.app_name
        ))),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete_model(State(state): State<AppState>, from: ClientIp, SgtJson(req): SgtJson<ModelAddress>) -> Reply {
    let owner = authenticate(&state, &req.creds, "model:write", &from).await?;
    match state.repo.delete_model(&owner, &req.app_name, &req.name).await? {
        Some(_) => Ok(ok(())),
        None => Err(no_model(&req.app_name, &req.name)),
    }
}

pub async fn update_client_data(
    State(state): State<AppState>,
    from: ClientIp,
    SgtJson(req): SgtJson<UpdateClientData>,
) -> Reply {
    let owner = authenticate(&state, &req.model.creds, "model:write", &from).await?;
    let value = client_data(Some(&req.client_data))?;
    let key = SgtModel::key_for(&owner, &req.model.app_name, &req.model.name);
    match state.repo.update_model(&key, |m| m.client_data = value.clone()).await? {
        Some(_) => Ok(ok(())),
        None => Err(no_model(&req.model.app_name, &req.model.name)),
    }
}

pub async fn read_my_models(
    State(state): State<AppState>,
    from: ClientIp,
    SgtJson(creds): SgtJson<Credentials>,
) -> Reply {
    let owner = authenticate(&state, &creds, "model:read", &from).await?;
    let models = state.repo.list_models(&owner).await?;
    Ok(ok(models.into_iter().map(ModelView::from).collect::<Vec<_>>()))
}

pub async fn read_public_models(
    State(state): State<AppState>,
    from: ClientIp,
    SgtJson(creds): SgtJson<Credentials>,
) -> Reply {
    authenticate(&state, &creds, "model:read", &from).await?;
    let models = state.repo.list_public_models().await?;
    Ok(ok(models.into_iter().map(ModelView::from).collect::<Vec<_>>()))
}

pub async fn clone_model_to_mine(
    State(state): State<AppState>,
    from: ClientIp,
    SgtJson(req): SgtJson<CloneModel>,
) -> Reply {
    let me = authenticate(&state, &req.creds, "model:write", &from).await?;
    identifier("new_name", &req.new_name)?;
    let source = state
        .repo
        .get_model(&req.author_unique_id, &req.app_name, &req.name)
        .await?;
    // Another user's private model is reported exactly like a missing one.
    let source = source
        .filter(|m| m.is_public || m.owner == me)
        .ok_or_else(|| no_model(&req.app_name, &req.name))?;
    match state
        .repo
        .clone_model(&source, &me, &req.new_name, uuid::Uuid::new_v4().to_string())
        .await
    {
        Ok(_) => Ok(ok(())),
        Err(StoreError::ConditionFailed) => Err(SgtError::CloneModel(format!(
            "you already have a model {:?} in app {:?}",
            req.new_name, req.app_name
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Reads a whole run request, for one whose rows did not read as it arrived: the rows in one
/// pass over the big array, the rest through serde. Shape problems are returned separately so
/// they are reported after authentication.
fn parse_run(body: &[u8]) -> Result<(ModelAddress, Result<Rows, RowsError>), SgtError> {
    match split_data(body, RUN_VALUES_READ) {
        Some(Ok(split)) => {
            if let Some(parsed) = with_address(split) {
                return Ok(parsed);
            }
        }
        Some(Err(e @ RowsError::Malformed(_))) => return Err(SgtError::Validation(rows_message(e))),
        _ => {}
    }
    let req: RunModel = parse_json(body)?;
    let rows = parse_rows_prefix(req.data.as_raw_str().as_bytes(), None, RUN_VALUES_READ).map(|(r, _)| r);
    Ok((req.model, rows))
}

/// The rows with the model address read from the rest of the body (the rows `null`), when it
/// reads. When it does not, the body as sent words the error: the rest's errors would quote the
/// `null` that stands in for the rows, at columns the client never sent.
fn with_address((rows, rest): (Rows, Vec<u8>)) -> Option<(ModelAddress, Result<Rows, RowsError>)> {
    Some((parse_json::<RunModelHead>(&rest).ok()?.model, Ok(rows)))
}

fn rows_message(e: RowsError) -> String {
    match e {
        RowsError::Malformed(m) | RowsError::Shape(m) => m,
    }
}

fn model_ref(m: &SgtModel) -> ModelRef {
    ModelRef {
        model_id: m.model_id.clone(),
        model_type: m.model_type.clone(),
        in_size: m.in_size,
        out_size: m.out_size,
        seed: m.seed,
        checkpoint: m.checkpoint.as_ref().map(|c| CheckpointRef {
            blob: c.blob.clone(),
            version: c.version,
        }),
    }
}

pub async fn run_model(State(state): State<AppState>, from: ClientIp, SgtRunBody(mut body): SgtRunBody) -> Reply {
    // The rows were read as the body arrived; when they were not, or the rest does not read,
    // the whole body is read again, and words what is wrong.
    let (address, rows) = match body.rows_and_rest().and_then(with_address) {
        Some(parsed) => parsed,
        None => {
            let whole = body.whole();
            match parse_run(&whole) {
                Ok(parsed) => parsed,
                Err(problem) => return Err(refuse(&state, &whole, Caller::Secret, problem, &from).await),
            }
        }
    };
    let owner = authenticate(&state, &address.creds, "inference:create", &from).await?;
    let model = own_model(&state, &owner, &address).await?;
    let Rows {
        values: rows,
        rows: n,
        width,
    } = rows.map_err(|e| match e {
        RowsError::Malformed(m) => SgtError::Validation(m),
        RowsError::Shape(m) => SgtError::Run(m),
    })?;
    if n == 0 {
        return Ok(ok(Vec::<Vec<f32>>::new()));
    }
    if width != model.in_size as usize {
        return Err(SgtError::Run(format!(
            "data rows have {width} values, expected {}",
            model.in_size
        )));
    }
    if rows.len() > MAX_RUN_VALUES {
        return Err(SgtError::Run(format!(
            "at most {} rows per request for this model",
            MAX_RUN_VALUES / width
        )));
    }
    drop(body);
    let mut result = state.sidecar.run(&model_ref(&model), &rows).await;
    if let Err(SidecarError::Stale) = result {
        // Training replaced the checkpoint after we read the record: read it again, once.
        let fresh = own_model(&state, &owner, &address).await?;
        result = state.sidecar.run(&model_ref(&fresh), &rows).await;
    }
    let out = match result {
        Ok(out) => out,
        Err(SidecarError::Busy) => return Err(SgtError::Run("the model server is busy; retry shortly".into())),
        Err(e) => return Err(SgtError::internal(e)),
    };
    let out_size = model.out_size as usize;
    if out.len() != n * out_size {
        return Err(SgtError::internal("sidecar returned the wrong number of outputs"));
    }
    Ok(json_bytes(rows_json(&out, out_size)))
}

pub async fn upload_train_data(
    State(state): State<AppState>,
    from: ClientIp,
    SgtJson(req): SgtJson<UploadTrainData>,
) -> Reply {
    let owner = authenticate(&state, &req.model.creds, "dataset:write", &from).await?;
    let model = own_model(&state, &owner, &req.model).await?;
    let data = req.train_data;
    if data.pairs == 0 {
        return Ok(ok(()));
    }
    if let Some(problem) = data.problem {
        return Err(SgtError::Upload(problem));
    }
    let (i, o) = (model.in_size as usize, model.out_size as usize);
    let (wi, wl) = data.widths.unwrap_or_default();
    for (w, want, what) in [(wi, i, "input"), (wl, o, "label")] {
        if w != want {
            return Err(SgtError::Upload(format!(
                "train_data {what}s have {w} values, expected {want}"
            )));
        }
    }
    if model.samples * (i + o) as u64 + data.values.len() as u64 > MAX_TRAIN_VALUES {
        return Err(SgtError::Upload(format!(
            "a model holds at most {MAX_TRAIN_VALUES} training values"
        )));
    }
    let bytes = maas_sidecar_client::wire::encode_f32(&data.values);
    let rows = data.pairs;
    match state
        .repo
        .append_train_data(&owner, &model.app_name, &model.name, rows, bytes.into())
        .await
    {
        Ok(_) => Ok(ok(())),
        Err(AppendError::NoModel) => Err(no_model(&model.app_name, &model.name)),
        Err(AppendError::Store(e)) => Err(e.into()),
    }
}

/// Takes no parameters; any body (or none) is accepted.
pub async fn list_model_type() -> Reply {
    Ok(ok(MODEL_TYPES))
}
