//! SGT request bodies and the checks that turn them into validated values at the edge.

use serde::{Deserialize, Serialize};

use crate::http::SgtError;
use maas_store::records::sgt::ClientData;

/// Longest accepted identifier (secret ids, names, app names).
pub const MAX_ID_LEN: usize = 256;
pub const MAX_SECRET_LEN: usize = 1024;
pub const MAX_CLIENT_DATA_LEN: usize = 64 * 1024;
pub const MAX_DIM: u32 = 4096;
/// Largest run request: rows x in_size values.
pub const MAX_RUN_VALUES: usize = 4096 * 4096;
/// How many numbers a run request's rows are read up to: one past the most a request may
/// send, so that an oversized request is refused after reading a bounded amount.
pub const RUN_VALUES_READ: usize = MAX_RUN_VALUES + 1;
/// Most training values (inputs + labels) one model may hold.
pub const MAX_TRAIN_VALUES: u64 = 64 * 1024 * 1024;

#[derive(Deserialize)]
pub struct Credentials {
    pub secret_id: String,
    pub secret_key: String,
}

#[derive(Deserialize)]
pub struct UpdateAuthToken {
    pub key: String,
    pub secret_id: String,
    pub secret_key: String,
    #[serde(default)]
    pub doc: Option<String>,
    pub end_time: String,
}

#[derive(Deserialize)]
pub struct CreateModel {
    #[serde(flatten)]
    pub creds: Credentials,
    pub name: String,
    pub app_name: String,
    pub model_type: String,
    /// Any JSON value; missing is `null`.
    #[serde(default)]
    pub client_data: Option<sonic_rs::Value>,
    pub in_size: u32,
    pub out_size: u32,
    pub is_public: bool,
}

#[derive(Deserialize)]
pub struct ModelAddress {
    #[serde(flatten)]
    pub creds: Credentials,
    pub name: String,
    pub app_name: String,
}

#[derive(Deserialize)]
pub struct UpdateClientData {
    #[serde(flatten)]
    pub model: ModelAddress,
    /// Any JSON value.
    pub client_data: sonic_rs::Value,
}

#[derive(Deserialize)]
pub struct CloneModel {
    #[serde(flatten)]
    pub creds: Credentials,
    pub new_name: String,
    pub app_name: String,
    pub author_unique_id: String,
    pub name: String,
}

/// `data` stays raw JSON here; [`super::rows`] reads it.
#[derive(Deserialize)]
pub struct RunModel<'a> {
    #[serde(flatten)]
    pub model: ModelAddress,
    #[serde(borrow)]
    pub data: sonic_rs::LazyValue<'a>,
}

/// A run request whose `data` was already parsed by [`super::rows::split_data`].
/// Its private `data` field is the null left in place of the rows: required, never read; not a
/// hand-made non-exhaustive marker, whatever clippy guesses.
#[derive(Deserialize)]
#[allow(clippy::manual_non_exhaustive)]
pub struct RunModelHead {
    #[serde(flatten)]
    pub model: ModelAddress,
    #[allow(dead_code)]
    data: (),
}

#[derive(Deserialize)]
pub struct UploadTrainData {
    #[serde(flatten)]
    pub model: ModelAddress,
    pub train_data: super::train_data::TrainData,
}

/// A model as the SGT API lists it.
#[derive(Serialize)]
pub struct ModelView {
    pub user_unique_id: String,
    pub name: String,
    /// Written as it was sent.
    pub client_data: Box<serde_json::value::RawValue>,
    pub app_name: String,
    pub model_type: String,
    pub in_size: u32,
    pub out_size: u32,
    pub is_public: bool,
}

impl From<maas_store::records::sgt::SgtModel> for ModelView {
    fn from(m: maas_store::records::sgt::SgtModel) -> Self {
        ModelView {
            user_unique_id: m.owner,
            name: m.name,
            client_data: m.client_data.json().to_owned(),
            app_name: m.app_name,
            model_type: m.model_type,
            in_size: m.in_size,
            out_size: m.out_size,
            is_public: m.is_public,
        }
    }
}

/// Checks an identifier-like field: present, not blank, not absurdly long.
pub fn identifier(field: &str, value: &str) -> Result<(), SgtError> {
    if value.trim().is_empty() {
        return Err(SgtError::Validation(format!("{field} must not be empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(SgtError::Validation(format!(
            "{field} is longer than {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

/// Checks a free-text field's length (`doc`).
pub fn free_text(field: &str, value: &str) -> Result<(), SgtError> {
    if value.len() > MAX_CLIENT_DATA_LEN {
        return Err(SgtError::Validation(format!(
            "{field} is longer than {MAX_CLIENT_DATA_LEN} bytes"
        )));
    }
    Ok(())
}

/// A client's value as it will be stored: any JSON value of at most [`MAX_CLIENT_DATA_LEN`]
/// bytes once serialized. Missing is `null`.
pub fn client_data(value: Option<&sonic_rs::Value>) -> Result<ClientData, SgtError> {
    let Some(value) = value else {
        return Ok(ClientData::null());
    };
    let text = sonic_rs::to_string(value).map_err(SgtError::internal)?;
    if text.len() > MAX_CLIENT_DATA_LEN {
        return Err(SgtError::Validation(format!(
            "client_data is {} bytes serialized; at most {MAX_CLIENT_DATA_LEN} are allowed",
            text.len()
        )));
    }
    ClientData::from_json(text).map_err(SgtError::internal)
}

/// Parses the documented `YYYY-MM-DD HH:MM:SS` (UTC) into epoch seconds.
pub fn end_time(value: &str) -> Result<i64, SgtError> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(value.trim(), &format)
        .map(|t| t.assume_utc().unix_timestamp())
        .map_err(|_| SgtError::Validation(format!("end_time {value:?} is not in the format YYYY-MM-DD HH:MM:SS")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_time_follows_the_documented_format() {
        assert_eq!(end_time("1970-01-02 00:00:00").unwrap(), 86_400);
        assert!(end_time("2024-13-01 00:00:00").is_err());
        assert!(end_time("2024-01-01").is_err());
        assert!(end_time("2024-01-01T00:00:00Z").is_err());
    }

    #[test]
    fn identifiers_must_be_present_and_bounded() {
        assert!(identifier("name", "m").is_ok());
        assert!(identifier("name", " ").is_err());
        assert!(identifier("name", &"x".repeat(MAX_ID_LEN + 1)).is_err());
    }
}
