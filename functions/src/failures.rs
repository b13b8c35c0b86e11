//! Failed credential checks, counted per scope (an account name, a caller's address) in
//! 15-minute windows, so that guessing is refused before it costs a slow hash.

use maas_store::records::identity::IdentityRepo;
use maas_store::StoreResult;

pub const WINDOW_SECS: i64 = 900;
/// Failed sign-ins allowed per account name in one window.
pub const PER_ACCOUNT: i64 = 5;
/// Failed sign-ins and secret checks allowed per address in one window.
pub const PER_ADDRESS: i64 = 20;

/// The scope of a caller's address.
pub fn address(ip: &str) -> String {
    format!("ip:{ip}")
}

fn counter_of(scope: &str) -> (String, String) {
    let window = maas_store::now_secs() / WINDOW_SECS;
    (format!("LOGINFAIL#{scope}"), window.to_string())
}

/// Failures in `scope` so far in this window.
pub async fn count(repo: &IdentityRepo, scope: &str) -> StoreResult<i64> {
    let (scope, window) = counter_of(scope);
    repo.counter(&scope, &window).await
}

/// Counts one more failure in `scope`; the counter expires with its next window.
pub async fn record(repo: &IdentityRepo, scope: &str) -> StoreResult<()> {
    let (scope, window) = counter_of(scope);
    let ttl = Some(maas_store::now_secs() + 2 * WINDOW_SECS);
    repo.count(&scope, &window, 1, ttl).await.map(drop)
}
