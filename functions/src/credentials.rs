//! Checking a credential (an SGT secret or an API key: the same record) by id and secret.

use maas_store::records::sgt::Secret;
use maas_store::StoreError;

use crate::auth::dummy_hash;
use crate::sgt::requests::{MAX_ID_LEN, MAX_SECRET_LEN};
use crate::state::AppState;

/// The credential, when it exists, has not expired, and `secret` matches its hash. Unknown ids
/// and expired credentials cost the same verification as a wrong secret, so timing does not
/// reveal which ids exist.
pub async fn verify(state: &AppState, id: &str, secret: &str) -> Result<Option<Secret>, StoreError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || secret.len() > MAX_SECRET_LEN {
        return Ok(None);
    }
    let stored = state.repo.get_secret(id).await?;
    let (hash, live) = match &stored {
        Some(s) => (s.hash.as_str(), s.end_time > maas_store::now_secs()),
        None => (dummy_hash(), false),
    };
    let matches = state.verifier.verify(id, secret, hash).await;
    Ok(stored.filter(|_| matches && live))
}
