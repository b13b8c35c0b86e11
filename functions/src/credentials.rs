//! Checking a credential (an SGT secret or an API key: the same record) by id and secret.

use maas_store::records::sgt::Secret;
use maas_store::StoreError;

use crate::auth::dummy_hash;
use crate::failures;
use crate::sgt::requests::{MAX_ID_LEN, MAX_SECRET_LEN};
use crate::state::AppState;

/// Why a check was refused unseen.
pub const THROTTLED: &str = "too many failed credential checks from this address; try again later";

/// What checking a credential found.
pub enum Checked {
    /// It exists, has not expired, and the secret matches its hash.
    Valid(Secret),
    Invalid,
    /// Not checked: the caller's address failed too often lately.
    Throttled,
}

/// Checks `secret` against credential `id` for a caller at address `from`. Unknown ids and
/// expired credentials cost the same verification as a wrong secret, so timing does not reveal
/// which ids exist. Secrets made by `update_auth_token` are the operator's choice and may be
/// short, so checks that would run argon2 are refused once the address has failed
/// [`failures::PER_ADDRESS`] times in the window (generated API keys cannot be guessed).
pub async fn verify(state: &AppState, id: &str, secret: &str, from: &str) -> Result<Checked, StoreError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || secret.len() > MAX_SECRET_LEN {
        return Ok(Checked::Invalid);
    }
    let stored = state.repo.get_secret(id).await?;
    let (hash, live) = match &stored {
        Some(s) => (s.hash.as_str(), s.end_time > maas_store::now_secs()),
        None => (dummy_hash(), false),
    };
    let (repo, address) = (&state.v1.repo, failures::address(from));
    let cheap = state.verifier.cheap_answer(id, secret, hash);
    if cheap.is_none() && failures::count(repo, &address).await? >= failures::PER_ADDRESS {
        return Ok(Checked::Throttled);
    }
    let matches = match cheap {
        Some(answer) => answer,
        None => state.verifier.verify_slowly(id, secret, hash).await,
    };
    match stored.filter(|_| matches && live) {
        Some(secret) => Ok(Checked::Valid(secret)),
        None => {
            if cheap.is_none() {
                failures::record(repo, &address).await?;
            }
            Ok(Checked::Invalid)
        }
    }
}
