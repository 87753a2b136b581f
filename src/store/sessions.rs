//! Store, sessions: login lockout counters, session creation and revocation.
//!
//! Guarantees: every login outcome and logout is written with its audit event in one
//! transaction; a session is returned only while it is unexpired, unrevoked and its
//! account is enabled.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection};

use super::model::User;
use super::{Result, Store, exec, now, opt_ts, ts};
use crate::audit::AuditEvent;

/// Forget the failed logins of `username` (inside the caller's transaction).
pub(super) async fn clear_login_attempts(
    conn: &mut SqliteConnection,
    username: &str,
) -> Result<u64> {
    let clear = sqlx::query("DELETE FROM login_attempts WHERE username = ?").bind(username);
    exec(conn, clear).await
}

/// Revoke every live session of `username` (inside the caller's transaction).
pub(super) async fn revoke_user_sessions(
    conn: &mut SqliteConnection,
    username: &str,
) -> Result<u64> {
    let revoke =
        sqlx::query("UPDATE sessions SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL")
            .bind(ts(now()))
            .bind(username);
    exec(conn, revoke).await
}

impl Store {
    /// The lockout state of an attempted username: `(failures, locked_until)`.
    pub async fn login_state(&self, username: &str) -> Result<(i64, Option<DateTime<Utc>>)> {
        let row =
            sqlx::query("SELECT failures, locked_until FROM login_attempts WHERE username = ?")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(r) => Ok((r.try_get("failures")?, opt_ts(r.try_get("locked_until")?)?)),
            None => Ok((0, None)),
        }
    }

    /// Record a failed login (and the lock, if this failure reaches the limit).
    pub async fn login_failed(
        &self,
        username: &str,
        lock_until: Option<DateTime<Utc>>,
        event: &AuditEvent,
    ) -> Result<()> {
        self.audited(event, async |tx| {
            let count = sqlx::query(
                "INSERT INTO login_attempts (username, failures, locked_until) VALUES (?, 1, ?)
             ON CONFLICT(username) DO UPDATE SET failures = failures + 1, locked_until = excluded.locked_until",
            )
            .bind(username)
            .bind(lock_until.map(ts));
            exec(tx, count).await?;
            if lock_until.is_some() {
                // A lock starts a fresh count for when it ends.
                let restart = sqlx::query("UPDATE login_attempts SET failures = 0 WHERE username = ?")
                    .bind(username);
                exec(tx, restart).await?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Record a successful login and store its session.
    pub async fn login_succeeded(
        &self,
        username: &str,
        token_hash: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
        event: &AuditEvent,
    ) -> Result<()> {
        self.audited(event, async |tx| {
            clear_login_attempts(tx, username).await?;
            let open = sqlx::query("INSERT INTO sessions (token_hash, username, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
                .bind(token_hash)
                .bind(username)
                .bind(csrf)
                .bind(ts(now()))
                .bind(ts(expires_at));
            exec(tx, open).await
        })
        .await?;
        Ok(())
    }

    /// The live session for a token hash: `(user, csrf token)`. Expired, revoked and
    /// disabled-account sessions are not returned.
    pub async fn session(&self, token_hash: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT u.*, s.csrf_token AS csrf FROM sessions s JOIN users u ON u.username = s.username
             WHERE s.token_hash = ? AND s.revoked_at IS NULL AND s.expires_at > ? AND u.disabled = 0",
        )
        .bind(token_hash)
        .bind(ts(now()))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((Self::user_from_row(&r)?, r.try_get("csrf")?))),
            None => Ok(None),
        }
    }

    /// Revoke a session (logout).
    pub async fn revoke_session(&self, token_hash: &str, event: &AuditEvent) -> Result<()> {
        self.audited(event, async |tx| {
            let revoke = sqlx::query(
                "UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
            )
            .bind(ts(now()))
            .bind(token_hash);
            exec(tx, revoke).await
        })
        .await?;
        Ok(())
    }
}
