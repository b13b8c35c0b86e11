//! Secrets: hashed with argon2id at rest, verified in constant time, and remembered per
//! process for a short while so a hot client does not pay argon2 on every request.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use lru::LruCache;
use sha2::{Digest, Sha256};

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane. See BENCHMARKS.md for its cost here.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string to store for `secret`.
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 hashing cannot fail with valid params")
        .to_string()
}

/// A hash no secret matches, verified instead when an id is unknown so that unknown ids cost
/// the same as wrong keys.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_secret(&format!("{:x}", Sha256::digest(random_seed()))))
}

fn random_seed() -> [u8; 16] {
    use argon2::password_hash::rand_core::RngCore;
    let mut seed = [0u8; 16];
    OsRng.fill_bytes(&mut seed);
    seed
}

/// The stored form of a generated 256-bit key: a fast hash is enough when the secret cannot be
/// guessed, and keeps API-key checks cheap.
pub fn hash_key(secret: &str) -> String {
    format!("sha256${:x}", Sha256::digest(secret.as_bytes()))
}

fn verify_key(secret: &str, stored_hex: &str) -> bool {
    use subtle::ConstantTimeEq;
    format!("{:x}", Sha256::digest(secret.as_bytes()))
        .as_bytes()
        .ct_eq(stored_hex.as_bytes())
        .into()
}

fn verify_hash(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2().verify_password(secret.as_bytes(), &h).is_ok())
}

/// How long a successful verification is remembered.
const REMEMBER: Duration = Duration::from_secs(300);

pub struct SecretVerifier {
    /// SHA-256 of (id, secret, stored hash) -> when it was verified. Including the stored hash
    /// means a rotated secret can never match an old entry.
    verified: Mutex<LruCache<[u8; 32], Instant>>,
}

impl Default for SecretVerifier {
    fn default() -> Self {
        SecretVerifier {
            verified: Mutex::new(LruCache::new(NonZeroUsize::new(4096).expect("non-zero"))),
        }
    }
}

impl SecretVerifier {
    /// Whether `secret` matches the stored hash (argon2id PHC string or `sha256$hex`), when
    /// that costs nothing: a fast hash, or this very secret verified lately. `None` when only
    /// argon2 can tell ([`Self::verify_slowly`]); only such checks are worth guessing.
    pub fn cheap_answer(&self, id: &str, secret: &str, phc: &str) -> Option<bool> {
        if let Some(hex) = phc.strip_prefix("sha256$") {
            return Some(verify_key(secret, hex));
        }
        self.remembers(&remembered_as(id, secret, phc)).then_some(true)
    }

    /// Runs argon2, off the async threads, and remembers a match for [`REMEMBER`].
    pub async fn verify_slowly(&self, id: &str, secret: &str, phc: &str) -> bool {
        let digest = remembered_as(id, secret, phc);
        let (secret, phc) = (secret.to_string(), phc.to_string());
        let ok = tokio::task::spawn_blocking(move || verify_hash(&secret, &phc))
            .await
            .unwrap_or(false);
        if ok {
            self.verified.lock().expect("lock").put(digest, Instant::now());
        }
        ok
    }

    fn remembers(&self, digest: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .expect("lock")
            .get(digest)
            .is_some_and(|t| t.elapsed() < REMEMBER)
    }

    /// Checks a password against its argon2id hash, off the async threads and never cached:
    /// every sign-in pays the full cost, which is what makes guessing slow.
    pub async fn verify_password(&self, password: &str, phc: &str) -> bool {
        let (password, phc) = (password.to_string(), phc.to_string());
        tokio::task::spawn_blocking(move || verify_hash(&password, &phc))
            .await
            .unwrap_or(false)
    }
}

/// The cache key of a verified (id, secret, stored hash).
fn remembered_as(id: &str, secret: &str, phc: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(id.as_bytes())
        .chain_update([0])
        .chain_update(secret.as_bytes())
        .chain_update([0])
        .chain_update(phc.as_bytes())
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SecretVerifier {
        /// Both steps, as `credentials::verify` takes them.
        async fn verify(&self, id: &str, secret: &str, phc: &str) -> bool {
            match self.cheap_answer(id, secret, phc) {
                Some(answer) => answer,
                None => self.verify_slowly(id, secret, phc).await,
            }
        }
    }

    #[tokio::test]
    async fn only_the_right_secret_verifies_and_the_hash_hides_it() {
        let phc = hash_secret("s3cret-value");
        assert!(phc.starts_with("$argon2id$") && !phc.contains("s3cret-value"));
        let v = SecretVerifier::default();
        assert_eq!(
            v.cheap_answer("id", "s3cret-value", &phc),
            None,
            "argon2 must run first"
        );
        assert!(v.verify("id", "s3cret-value", &phc).await);
        assert_eq!(
            v.cheap_answer("id", "s3cret-value", &phc),
            Some(true),
            "then it is remembered"
        );
        assert!(v.verify("id", "s3cret-value", &phc).await, "cached path agrees");
        assert!(!v.verify("id", "s3cret-valuE", &phc).await);
        assert!(!v.verify("id", "", &phc).await);
        assert!(!v.verify("id", "s3cret-value", "not a phc string").await);
        // A rotated secret invalidates what was remembered about the old one.
        let rotated = hash_secret("new-value");
        assert!(!v.verify("id", "s3cret-value", &rotated).await);
        let key = hash_key("generated");
        assert!(v.verify("id", "generated", &key).await && !v.verify("id", "generatee", &key).await);
    }
}
