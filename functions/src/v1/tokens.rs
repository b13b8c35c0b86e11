//! Access tokens (short-lived HS256 JWTs signed under a key id, so keys rotate), refresh tokens
//! (opaque, rotated on every use) and API keys (opaque, `mk_{id}.{secret}`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::envelope::{ApiError, Code};

/// One signing key. The first key of [`TokenKeys`] signs; all of them verify.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub secret: Vec<u8>,
}

/// Token settings, built once per process.
#[derive(Clone)]
pub struct TokenKeys {
    pub keys: Vec<SigningKey>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: i64,
    pub refresh_ttl: i64,
}

/// What an access token says.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub sid: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

impl TokenKeys {
    /// Parses `kid=base64secret,kid2=...` (the first one signs). Secrets must be 32+ bytes.
    pub fn parse_keys(spec: &str) -> anyhow::Result<Vec<SigningKey>> {
        let keys = spec
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|entry| {
                let (kid, secret) = entry
                    .trim()
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("JWT keys are kid=base64secret pairs"))?;
                let secret = URL_SAFE_NO_PAD
                    .decode(secret.trim_end_matches('='))
                    .map_err(|_| anyhow::anyhow!("JWT key {kid}: secret is not base64url"))?;
                anyhow::ensure!(secret.len() >= 32, "JWT key {kid}: secret must be at least 32 bytes");
                Ok(SigningKey {
                    kid: kid.to_string(),
                    secret,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!keys.is_empty(), "at least one JWT key is needed");
        Ok(keys)
    }

    /// A fresh `kid=secret` spec, for the local gateway's first start.
    pub fn generate_spec() -> String {
        format!("k{}={}", &random_id()[..8], URL_SAFE_NO_PAD.encode(random_bytes()))
    }

    pub fn new(keys: Vec<SigningKey>) -> Self {
        TokenKeys {
            keys,
            issuer: "maas".into(),
            audience: "maas-api".into(),
            access_ttl: 900,
            refresh_ttl: 30 * 24 * 3600,
        }
    }

    /// An access token for the user's session.
    pub fn issue(&self, user_id: &str, session_id: &str) -> Result<String, ApiError> {
        let now = maas_store::now_secs();
        let claims = Claims {
            sub: user_id.into(),
            sid: session_id.into(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl,
            jti: random_id(),
        };
        let key = &self.keys[0];
        let header = Header {
            kid: Some(key.kid.clone()),
            ..Header::new(Algorithm::HS256)
        };
        encode(&header, &claims, &EncodingKey::from_secret(&key.secret)).map_err(ApiError::internal)
    }

    /// Checks algorithm (HS256 only: `none` and RS/ES tokens are refused), key id, signature,
    /// `exp`, `nbf`, `iss` and `aud`. Revocation is checked by the caller against the session.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid = |why: &str| ApiError::new(Code::Auth001, format!("invalid token: {why}"));
        let header = decode_header(token).map_err(|_| invalid("malformed"))?;
        if header.alg != Algorithm::HS256 {
            return Err(invalid("algorithm not accepted"));
        }
        let kid = header.kid.ok_or_else(|| invalid("no key id"))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| invalid("unknown key id"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        decode::<Claims>(token, &DecodingKey::from_secret(&key.secret), &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::new(Code::Auth002, "token expired"),
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => invalid("not valid yet"),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => invalid("wrong audience"),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => invalid("wrong issuer"),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => invalid("bad signature"),
                _ => invalid("malformed"),
            })
    }
}

pub fn random_bytes() -> [u8; 32] {
    rand::rng().random()
}

/// 26 lowercase alphanumerics (~134 bits), safe in keys, paths and token formats.
pub fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..26)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes())
}

pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `rt_{user}.{session}.{secret}`: names its session, so a refresh is one read.
pub struct RefreshToken {
    pub user_id: String,
    pub session_id: String,
    pub secret: String,
}

impl RefreshToken {
    pub fn new(user_id: &str, session_id: &str) -> Self {
        RefreshToken {
            user_id: user_id.into(),
            session_id: session_id.into(),
            secret: random_secret(),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.strip_prefix("rt_")?.splitn(3, '.');
        let (user_id, session_id, secret) = (parts.next()?, parts.next()?, parts.next()?);
        Some(RefreshToken {
            user_id: user_id.into(),
            session_id: session_id.into(),
            secret: secret.into(),
        })
    }
}

impl std::fmt::Display for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rt_{}.{}.{}", self.user_id, self.session_id, self.secret)
    }
}

/// `mk_{key_id}.{secret}`. The same pair works in the SGT API as `secret_id` / `secret_key`.
pub fn parse_api_key(s: &str) -> Option<(&str, &str)> {
    let (id, secret) = s.strip_prefix("mk_")?.split_once('.')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(TokenKeys::parse_keys(&TokenKeys::generate_spec()).unwrap())
    }

    #[test]
    fn an_issued_token_verifies_and_says_who_it_is_for() {
        let k = keys();
        let claims = k.verify(&k.issue("u1", "s1").unwrap()).unwrap();
        assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("u1", "s1"));
        assert!(claims.exp > claims.nbf);
    }

    #[test]
    fn a_token_signed_by_a_rotated_out_key_is_refused() {
        let old = keys();
        let token = old.issue("u1", "s1").unwrap();
        let mut rotated = keys();
        assert!(rotated.verify(&token).is_err());
        // Keeping the old key as a verifier accepts it during rotation.
        rotated.keys.push(old.keys[0].clone());
        assert!(rotated.verify(&token).is_ok());
    }

    #[test]
    fn refresh_tokens_and_api_keys_round_trip() {
        let t = RefreshToken::new("u1", "s1");
        let parsed = RefreshToken::parse(&t.to_string()).unwrap();
        assert_eq!(
            (parsed.user_id, parsed.session_id, parsed.secret),
            ("u1".into(), "s1".into(), t.secret)
        );
        assert_eq!(parse_api_key("mk_abc.def-_x"), Some(("abc", "def-_x")));
        assert_eq!(parse_api_key("mk_.x"), None);
        assert_eq!(parse_api_key("abc.def"), None);
    }
}
