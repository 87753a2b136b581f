//! Authentication stage: named accounts with argon2id password hashes, 256-bit random
//! session tokens stored only as SHA-256 hashes, expiry, logout, and lockout after
//! repeated failures.
//!
//! Guarantees: a failed login never tells whether the account exists — unknown names run
//! the same argon2id verification against a dummy hash and lock exactly like real ones;
//! a stolen database holds no usable token.

pub mod certificate;
pub mod login;
// production (issue 14): per-address login rate
pub mod rate;

use chrono::{DateTime, Duration, Utc};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Failed logins before the account is locked.
pub const MAX_FAILURES: i64 = 5;
/// How long a lock lasts.
pub const LOCK_MINUTES: i64 = 15;

/// Errors of the authentication layer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the system random generator failed")]
    Random,
    #[error(
        "password too short: use at least 12 characters / パスワードが短すぎます（12 文字以上にしてください）"
    )]
    WeakPassword,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| AuthError::Random)?;
    Ok(b)
}

/// A fresh random value as hex (`bytes` random bytes).
pub fn random_hex(bytes: usize) -> Result<String, AuthError> {
    let mut b = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| AuthError::Random)?;
    Ok(hex::encode(b))
}

/// Hash a password with argon2id (default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt_bytes = random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Check a password against a stored hash. A malformed hash never verifies.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, computed once, so that logins for unknown names cost
/// the same argon2id work as real ones.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let pw = random_hex(16).unwrap_or_else(|_| "kura-dummy-password".into());
        hash_password(&pw).unwrap_or_default()
    })
}

/// Enforce a minimal password policy for accounts created by operators.
pub fn check_password_strength(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < 12 {
        return Err(AuthError::WeakPassword);
    }
    Ok(())
}

/// A new session token: the secret for the caller and the hash for the store.
pub struct NewToken {
    pub token: String,
    pub hash: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// Create a 256-bit session token plus a CSRF token for cookie sessions.
pub fn new_token(ttl: Duration) -> Result<NewToken, AuthError> {
    let token = hex::encode(random_bytes::<32>()?);
    let csrf = hex::encode(random_bytes::<32>()?);
    Ok(NewToken {
        hash: token_hash(&token),
        token,
        csrf,
        expires_at: Utc::now() + ttl,
    })
}

/// SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

/// Constant-time comparison of two secrets (CSRF tokens).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    // Compare digests so length and content leak nothing through timing.
    let da = digest::digest(&digest::SHA256, a.as_bytes());
    let db = digest::digest(&digest::SHA256, b.as_bytes());
    da.as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Whether a lockout is in force at `now`.
pub fn is_locked(locked_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    locked_until.is_some_and(|t| t > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip_and_wrong_password() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(!verify_password("anything", "not a hash"));
    }

    #[test]
    fn tokens_are_256_bit_and_stored_hashed() {
        let t = new_token(Duration::hours(1)).unwrap();
        assert_eq!(t.token.len(), 64);
        assert_ne!(t.token, t.hash);
        assert_eq!(token_hash(&t.token), t.hash);
        let u = new_token(Duration::hours(1)).unwrap();
        assert_ne!(t.token, u.token);
        assert_ne!(t.csrf, u.csrf);
    }

    #[test]
    fn a_lock_holds_until_its_end() {
        let now = Utc::now();
        let until = now + Duration::minutes(LOCK_MINUTES);
        assert!(is_locked(Some(until), now));
        assert!(!is_locked(None, now));
        assert!(!is_locked(Some(until), until + Duration::seconds(1)));
    }

    #[test]
    fn weak_passwords_are_refused() {
        assert!(check_password_strength("short").is_err());
        assert!(check_password_strength("twelve chars").is_ok());
    }
}
