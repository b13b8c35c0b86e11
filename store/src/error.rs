use thiserror::Error;

/// What can go wrong in storage. Callers branch on `ConditionFailed`; everything else is an
/// internal error that the API layer never shows to a user.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A write's condition did not hold (the item exists, is missing, or changed under us).
    #[error("condition failed")]
    ConditionFailed,
    /// A stored item could not be decoded into its record.
    #[error("corrupt item {0}: {1}")]
    Corrupt(String, String),
    /// A multipart upload cannot complete as asked: it is gone, or a part is missing, too small
    /// or not the one uploaded. The client's doing, so its message may be shown.
    #[error("upload: {0}")]
    Upload(String),
    /// The backend failed (I/O, network, throttling).
    #[error("storage backend: {0}")]
    Backend(#[from] anyhow::Error),
}

impl StoreError {
    pub fn backend(e: impl std::fmt::Display) -> Self {
        StoreError::Backend(anyhow::anyhow!("{e}"))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
