//! Store, sessions: login lockout counters, session creation and revocation.
//!
//! Guarantees: every login outcome and logout is written with its audit event in one
//! transaction; a session is returned only while it is unexpired, unrevoked and its
//! account is enabled.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::model::User;
use super::{Result, Store, now, opt_ts, ts};
use crate::audit::AuditEvent;

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
            sqlx::query(
                "INSERT INTO login_attempts (username, failures, locked_until) VALUES (?, 1, ?)
             ON CONFLICT(username) DO UPDATE SET failures = failures + 1, locked_until = excluded.locked_until",
            )
            .bind(username)
            .bind(lock_until.map(ts))
            .execute(&mut *tx)
            .await?;
            if lock_until.is_some() {
                // A lock starts a fresh count for when it ends.
                sqlx::query("UPDATE login_attempts SET failures = 0 WHERE username = ?")
                    .bind(username)
                    .execute(&mut *tx)
                    .await?;
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
            sqlx::query("DELETE FROM login_attempts WHERE username = ?")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO sessions (token_hash, username, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
                .bind(token_hash)
                .bind(username)
                .bind(csrf)
                .bind(ts(now()))
                .bind(ts(expires_at))
                .execute(&mut *tx)
                .await?;
            Ok(())
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
            sqlx::query(
                "UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
            )
            .bind(ts(now()))
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await?;
        Ok(())
    }
}
