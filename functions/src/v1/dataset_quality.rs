//! Quality checks (seed 002 质量检查): `check` reads every record as a `dataset_quality`
//! task in a sidecar; `quick` reads the first records within the request. Both report what
//! [`maas_datasets::quality`] finds, with token lengths counted by the model the caller names.

use axum::extract::State;
use maas_datasets::quality::{text_of, Checker, Report, Tokens};
use maas_datasets::{Format, Item};
use maas_sidecar_client::llm::{GenerateError, TokenCountRequest};
use maas_store::records::datasets::Source;
use maas_store::records::tasks::Task;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::envelope::{created, ok, ApiError, ApiJson, ApiQuery, ApiResult, Code};
use super::guard::Principal;
use super::tasks::TaskView;
use super::validate;
use crate::state::AppState;

/// The task that checks a whole dataset.
pub const QUALITY: &str = "dataset_quality";
/// The most records `quick` reads, and the bytes it reads of each file to find them.
const QUICK_MAX: u32 = 1000;
const QUICK_BYTES: u64 = 4 << 20;

#[derive(Deserialize, ToSchema)]
pub struct QualityCheck {
    #[schema(max_length = 64)]
    pub dataset_id: String,
    /// Check this version (each of its splits) instead of the dataset's file.
    #[schema(max_length = 64)]
    pub version_id: Option<String>,
    /// A language model whose tokenizer counts the token lengths.
    #[schema(max_length = 200)]
    pub model: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuickCheck {
    #[param(max_length = 64)]
    pub dataset_id: String,
    #[param(max_length = 64)]
    pub version_id: Option<String>,
    #[param(max_length = 200)]
    pub model: Option<String>,
    /// Records to read, 1 to 1000; 200 by default.
    #[param(minimum = 1, maximum = 1000)]
    pub sample: Option<u32>,
}

/// What the caller asked to check, ready.
async fn source(state: &AppState, who: &Principal, dataset: &str, version: Option<&str>) -> Result<Source, ApiError> {
    let ids_ok = validate::could_be_id(dataset) && version.is_none_or(validate::could_be_id);
    let found = match ids_ok {
        true => state.datasets.source(&who.user.user_id, dataset, version).await?,
        false => None,
    };
    found.ok_or_else(|| ApiError::new(Code::Resource001, "no ready dataset (or version of it) by that id"))
}

/// A refusal from the sidecar about the named model, in the envelope.
fn model_error(e: GenerateError) -> ApiError {
    match e {
        GenerateError::UnknownModel { model } => {
            ApiError::field(Code::Resource001, "model", format!("no model {model:?}"))
        }
        GenerateError::BadPrompt { message } => ApiError::field(Code::Validation003, "model", message).unprocessable(),
        GenerateError::Loading => ApiError::new(Code::ServiceUnavailable, "the model is loading; try again shortly"),
        e => ApiError::internal(e),
    }
}

/// Checks that `model` is a language model a sidecar has (loading counts).
async fn check_model(state: &AppState, model: &str) -> Result<(), ApiError> {
    validate::text("model", model, 200)?;
    let req = TokenCountRequest {
        model: model.into(),
        texts: Vec::new(),
    };
    match state.sidecar.count_tokens(req).await {
        Ok(_) | Err(GenerateError::Loading) => Ok(()),
        Err(e) => Err(model_error(e)),
    }
}

/// Starts a check of every record, as a task; follow it at `/api/v1/tasks/{id}`, whose
/// `result` is the report.
#[utoipa::path(post, path = "/api/v1/datasets/quality/check", tag = "datasets", request_body = QualityCheck,
    responses((status = 404, description = "No ready dataset or version by that id, or no such model", body = super::envelope::ErrorBody),
        (status = 201, body = super::envelope::Envelope<TaskView>)))]
pub async fn check(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<QualityCheck>,
) -> ApiResult<TaskView> {
    let src = source(&state, &who, &req.dataset_id, req.version_id.as_deref()).await?;
    if let Some(m) = &req.model {
        check_model(&state, m).await?;
    }
    let input = json!({"dataset_id": src.dataset.dataset_id, "version_id": req.version_id, "model": req.model});
    let task = Task::new(
        &src.dataset.owner,
        QUALITY,
        &format!("check {}", src.dataset.name),
        input,
    );
    state.tasks.create(&task).await?;
    Ok(created(TaskView::from(&task)))
}

/// Checks the first records (200 by default, at most 1,000) and answers the report.
#[utoipa::path(get, path = "/api/v1/datasets/quality/quick", tag = "datasets", params(QuickCheck),
    responses((status = 404, description = "No ready dataset or version by that id, or no such model", body = super::envelope::ErrorBody),
        (status = 200, body = super::envelope::Envelope<Object>)))]
pub async fn quick(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<QuickCheck>,
) -> ApiResult<Value> {
    let sample = q.sample.unwrap_or(200);
    if !(1..=QUICK_MAX).contains(&sample) {
        return Err(ApiError::field(
            Code::Validation003,
            "sample",
            "sample must be 1 to 1000",
        ));
    }
    let src = source(&state, &who, &q.dataset_id, q.version_id.as_deref()).await?;
    // The smallest files first, each taking its share of what is left, so that small splits
    // leave their unused share to the large ones.
    let mut order: Vec<usize> = (0..src.files.len()).collect();
    order.sort_by_key(|&i| src.files[i].2);
    let mut left = sample as usize;
    let mut files: Vec<(Option<String>, Vec<Item>)> = (0..src.files.len()).map(|_| (None, Vec::new())).collect();
    let mut cut = false;
    for (k, &i) in order.iter().enumerate() {
        let (split, blob, size, format) = &src.files[i];
        let share = left.div_ceil(order.len() - k);
        let head = state
            .registry
            .blobs
            .get_range(blob, 0, QUICK_BYTES)
            .await?
            .unwrap_or_default();
        let truncated = (head.len() as u64) < *size;
        let (items, more) = first_items(Format::parse(format).unwrap_or(Format::Jsonl), &head, share, truncated);
        left -= items.iter().filter(|i| matches!(i, Item::Row(..))).count().min(left);
        cut |= more;
        files[i] = (split.clone(), items);
    }
    let texts: Vec<String> = files
        .iter()
        .flat_map(|(_, items)| items.iter())
        .filter_map(|i| match i {
            Item::Row(_, r) => Some(text_of(r)),
            _ => None,
        })
        .collect();
    let counted = match &q.model {
        Some(m) => {
            validate::text("model", m, 200)?;
            let req = TokenCountRequest {
                model: m.clone(),
                texts,
            };
            Some(state.sidecar.count_tokens(req).await.map_err(model_error)?)
        }
        None => None,
    };
    let mut counts = counted.iter().flat_map(|c| c.counts.iter().copied());
    let mut next = |_: &str| counts.next().unwrap_or(0) as u64;
    let tokens = counted.as_ref().map(|c| Tokens {
        model: q.model.clone().unwrap_or_default(),
        context: c.context as u64,
        count: &mut next,
    });
    let mut checker = Checker::new(&src.dataset.kind, tokens);
    for (i, (split, items)) in files.into_iter().enumerate() {
        for item in items {
            checker.feed((i as u8, split.as_deref()), item);
        }
    }
    if cut {
        checker.sampled();
    }
    Ok(ok(with_ids(checker.report(), &src)))
}

/// Up to `n` records from the head of a file, and whether the file goes on past them. An
/// error where the head was cut off is the cut, not the file's.
fn first_items(format: Format, head: &[u8], n: usize, truncated: bool) -> (Vec<Item>, bool) {
    let mut items = Vec::new();
    let mut rows = 0;
    let mut more = false;
    let read = maas_datasets::rows(format, head, &mut |item| {
        if rows == n {
            more = true;
            return false;
        }
        rows += matches!(item, Item::Row(..)) as usize;
        items.push(item);
        true
    });
    if read.is_err() {
        return (items, true);
    }
    if truncated {
        while matches!(items.last(), Some(Item::Error(_))) {
            items.pop();
        }
        more = true;
    }
    (items, more)
}

fn with_ids(report: Report, src: &Source) -> Value {
    let mut v = serde_json::to_value(report).unwrap_or_default();
    v["dataset_id"] = json!(src.dataset.dataset_id);
    v["version_id"] = json!(src.version.as_ref().map(|v| v.version_id.clone()));
    v
}
