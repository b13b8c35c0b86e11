//! A `multipart/form-data` body, read whole under the small-upload limit: text fields by name
//! and files by field name. Larger files go to the bucket through presigned URLs instead.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use bytes::Bytes;

use crate::body::BodyLimit;
use crate::v1::envelope::{ApiError, Code};

/// The most a form may carry: under Lambda's 6 MB payload once API Gateway has base64-encoded it.
pub const FORM_LIMIT: usize = 4 << 20;
/// The most a text field may carry.
const TEXT_LIMIT: usize = 16 << 10;

pub struct File {
    pub file_name: String,
    pub bytes: Bytes,
}

#[derive(Default)]
pub struct Form {
    pub text: HashMap<String, String>,
    pub files: HashMap<String, File>,
    /// Names given more than once: asking for one is an error; unknown ones are ignored.
    twice: Vec<String>,
}

impl Form {
    /// Reads a multipart body. A part without a name, or a body past [`FORM_LIMIT`], is refused;
    /// a field given twice is refused when it is asked for.
    pub async fn read(req: Request) -> Result<Form, ApiError> {
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(BodyLimit(FORM_LIMIT));
        let bytes = crate::body::read(Request::from_parts(parts.clone(), body))
            .await
            .map_err(|e| {
                let mut e = match e {
                    crate::body::BodyError::TooLarge => ApiError::new(
                        Code::Validation003,
                        format!(
                            "a form may carry at most {FORM_LIMIT} bytes; upload larger files with a presigned upload"
                        ),
                    ),
                    _ => ApiError::new(Code::Validation002, "cannot read the request body"),
                };
                // As for any oversized or unreadable body.
                e.status = Some(axum::http::StatusCode::BAD_REQUEST);
                e
            })?;
        let mut multipart = Multipart::from_request(Request::from_parts(parts, Body::from(bytes)), &())
            .await
            .map_err(|e| ApiError::new(Code::Validation004, format!("not a multipart form: {}", e.body_text())))?;
        let mut form = Form::default();
        while let Some(field) = multipart.next_field().await.map_err(malformed)? {
            let Some(name) = field.name().map(str::to_string) else {
                return Err(ApiError::new(Code::Validation002, "a form part has no name"));
            };
            if form.text.contains_key(&name) || form.files.contains_key(&name) {
                form.twice.push(name);
                continue;
            }
            match field.file_name().map(str::to_string) {
                Some(file_name) => {
                    let bytes = field.bytes().await.map_err(malformed)?;
                    form.files.insert(name, File { file_name, bytes });
                }
                None => {
                    let text = field.text().await.map_err(malformed)?;
                    if text.len() > TEXT_LIMIT {
                        return Err(ApiError::field(
                            Code::Validation003,
                            &name,
                            format!("{name} is too long"),
                        ));
                    }
                    form.text.insert(name, text);
                }
            }
        }
        Ok(form)
    }

    pub fn take_file(&mut self, name: &str) -> Result<Option<File>, ApiError> {
        self.once(name)?;
        Ok(self.files.remove(name))
    }

    fn once(&self, name: &str) -> Result<(), ApiError> {
        if self.twice.iter().any(|n| n == name) {
            return Err(ApiError::field(
                Code::Validation002,
                name,
                format!("{name} is given twice"),
            ));
        }
        Ok(())
    }

    /// A text field, where a file of the same name is a mistake worth naming.
    pub fn text(&self, name: &str) -> Result<Option<&str>, ApiError> {
        self.once(name)?;
        if self.files.contains_key(name) {
            return Err(
                ApiError::field(Code::Validation002, name, format!("{name} must be text, not a file")).unprocessable(),
            );
        }
        Ok(self.text.get(name).map(String::as_str))
    }
}

fn malformed(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(
        Code::Validation002,
        format!("malformed multipart body: {}", e.body_text()),
    )
}

/// Whether a request carries a multipart form.
pub fn is_multipart(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// Whether a request carries JSON.
pub fn is_json(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"))
}
