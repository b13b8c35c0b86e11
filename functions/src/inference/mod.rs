//! What every inference surface shares (OpenAI's `/v1`, the seeds' `/api/v1/inference`,
//! `/api/v1/generate`): calls observed once for metering, deployment counters and history.
//!
//! - `observe`: a call's streams watched to their end, then recorded.
//! - `metrics`: a deployment's counters and the percentiles read from them.

pub mod metrics;
pub mod observe;

use maas_store::records::inference::InferenceRepo;

pub use observe::{Call, Outcome};

pub struct InferenceState {
    pub repo: InferenceRepo,
    /// Days a call stays in its caller's history.
    pub history_days: u32,
}
