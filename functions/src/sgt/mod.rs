//! The SGT API (seed 000): 11 POST endpoints with JSON bodies, raw JSON results and
//! `{"exception", "message"}` failures.

pub mod answer;
#[cfg(target_arch = "x86_64")]
mod digit_batch;
pub mod extract;
pub mod handlers;
pub mod number;
pub mod requests;
pub mod rows;
#[cfg(target_arch = "x86_64")]
mod rows_avx2;
pub mod run_body;
pub mod train_data;
