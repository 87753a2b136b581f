//! Store, sessions: login lockout counters, session creation and revocation.
//!
//! Guarantees: every login outcome and logout is written with its audit event in one
//! transaction; a session is returned only while it is unexpired, unrevoked and its
//! account is enabled. Lockout is atomic: one statement reads, increments and locks
//! ([`Store::login_failed`]), so attempts in flight at once are all counted and the
//! `max_failures`-th locks; a lock is only ever extended, never shortened or cleared by a
//! later failure; and a correct password that arrives while the account is locked (its
//! check began before the lock was set) opens no session ([`Store::login_succeeded`]).

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, Row};

use super::model::User;
use super::{Result, Store, exec, now, opt_ts, ts};
use crate::audit::AuditEvent;

/// Forget the failed logins of `username` (inside the caller's transaction).
pub(super) async fn clear_login_attempts(conn: &mut AnyConnection, username: &str) -> Result<u64> {
    let clear = sqlx::query("DELETE FROM login_attempts WHERE username = $1").bind(username);
    exec(conn, clear).await
}

/// Revoke every live session of `username` (inside the caller's transaction).
pub(super) async fn revoke_user_sessions(conn: &mut AnyConnection, username: &str) -> Result<u64> {
    let revoke = sqlx::query(
        "UPDATE sessions SET revoked_at = $1 WHERE username = $2 AND revoked_at IS NULL",
    )
    .bind(ts(now()))
    .bind(username);
    exec(conn, revoke).await
}

/// What one failed login did to its name's counter.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedLogin {
    /// Failures counted since the last lock or success (0 right after a lock).
    pub failures: i64,
    pub locked_until: Option<DateTime<Utc>>,
    /// This failure set (or extended) the lock.
    pub locked_now: bool,
}

impl Store {
    /// The lockout state of an attempted username: `(failures, locked_until)`.
    pub async fn login_state(&self, username: &str) -> Result<(i64, Option<DateTime<Utc>>)> {
        let row =
            sqlx::query("SELECT failures, locked_until FROM login_attempts WHERE username = $1")
                .bind(username)
                .fetch_optional(&mut *self.conn().await?)
                .await?;
        match row {
            Some(r) => Ok((r.try_get("failures")?, opt_ts(r.try_get("locked_until")?)?)),
            None => Ok((0, None)),
        }
    }

    /// Record a failed login in one statement: count it, and when the count reaches
    /// `max_failures` lock the name until `lock_until` (a later lock than one already
    /// set; a lock starts a fresh count for when it ends). `event` is built from the
    /// outcome, so its detail says whether this attempt locked the name.
    pub async fn login_failed(
        &self,
        username: &str,
        max_failures: i64,
        lock_until: DateTime<Utc>,
        event: impl Fn(&FailedLogin) -> AuditEvent,
    ) -> Result<FailedLogin> {
        let until = ts(lock_until);
        let (outcome, _) = self
            .audited(&event, async |tx| {
                let count = sqlx::query(
                    "INSERT INTO login_attempts AS a (username, failures, locked_until)
                     VALUES ($1, CASE WHEN 1 >= $2 THEN 0 ELSE 1 END, CASE WHEN 1 >= $2 THEN $3 END)
                     ON CONFLICT(username) DO UPDATE SET
                       failures = CASE WHEN a.failures + 1 >= $2 THEN 0 ELSE a.failures + 1 END,
                       locked_until = CASE
                         WHEN a.failures + 1 >= $2 AND (a.locked_until IS NULL OR a.locked_until < $3) THEN $3
                         ELSE a.locked_until END
                     RETURNING failures, locked_until",
                )
                .bind(username)
                .bind(max_failures)
                .bind(&until)
                .fetch_one(&mut *tx)
                .await?;
                let failures: i64 = count.try_get("failures")?;
                Ok(FailedLogin {
                    failures,
                    // A lock restarts the count: 0 right after this failure means it locked.
                    locked_now: failures == 0,
                    locked_until: opt_ts(count.try_get("locked_until")?)?,
                })
            })
            .await?;
        Ok(outcome)
    }

    /// Record a successful login and store its session, unless the name is locked at
    /// `now` (a lock set while this password was being checked): then nothing but the
    /// refusal is written and `false` returned. `event` gets whether a session opened.
    pub async fn login_succeeded(
        &self,
        username: &str,
        token_hash: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        event: impl Fn(&bool) -> AuditEvent,
    ) -> Result<bool> {
        let (opened, _) = self
            .audited(&event, async |tx| {
            let lock: Option<Option<String>> =
                sqlx::query_scalar("SELECT locked_until FROM login_attempts WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&mut *tx)
                    .await?;
            if opt_ts(lock.flatten())?.is_some_and(|until| until > now) {
                return Ok(false);
            }
            clear_login_attempts(tx, username).await?;
            let open = sqlx::query("INSERT INTO sessions (token_hash, username, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(token_hash)
                .bind(username)
                .bind(csrf)
                .bind(ts(now))
                .bind(ts(expires_at));
            exec(tx, open).await?;
            Ok(true)
        })
        .await?;
        Ok(opened)
    }

    /// The live session for a token hash: `(user, csrf token)`. Expired, revoked and
    /// disabled-account sessions are not returned.
    pub async fn session(&self, token_hash: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT u.*, s.csrf_token AS csrf FROM sessions s JOIN users u ON u.username = s.username
             WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.disabled = 0",
        )
        .bind(token_hash)
        .bind(ts(now()))
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        match row {
            Some(r) => Ok(Some((Self::user_from_row(&r)?, r.try_get("csrf")?))),
            None => Ok(None),
        }
    }

    /// Sessions alive now (unexpired, unrevoked).
    pub async fn active_sessions(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > $1",
        )
        .bind(ts(now()))
        .fetch_one(&mut *self.conn().await?)
        .await?)
    }

    /// Revoke a session (logout).
    pub async fn revoke_session(&self, token_hash: &str, event: &AuditEvent) -> Result<()> {
        self.audited(event, async |tx| {
            let revoke = sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
            )
            .bind(ts(now()))
            .bind(token_hash);
            exec(tx, revoke).await
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use serde_json::json;

    use super::FailedLogin;
    use crate::audit::AuditEvent;
    use crate::store::tests::{events, store};

    fn denied(f: &FailedLogin) -> AuditEvent {
        AuditEvent::denied(
            "x",
            "session.login",
            None,
            "invalid_credentials",
            json!({"locked": f.locked_now}),
        )
    }

    /// The lockout race (issue 14): failures in flight at once are all counted, the fifth
    /// locks, and no later failure shortens or clears the lock.
    #[tokio::test]
    async fn concurrent_failures_lock_at_the_fifth_and_never_unlock() {
        let (_d, s) = store().await;
        let now = Utc::now();
        let lock = now + Duration::minutes(15);
        let tries = (0..20).map(|_| s.login_failed("victim", 5, lock, denied));
        let outcomes: Vec<FailedLogin> = futures::future::try_join_all(tries).await.unwrap();
        // Every fifth counted failure (re)locks; the lock is there at the end.
        assert_eq!(outcomes.iter().filter(|f| f.locked_now).count(), 4);
        let (_, until) = s.login_state("victim").await.unwrap();
        let micros = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.timestamp_micros());
        assert_eq!(micros(until), micros(Some(lock)));
        // A later failure with an earlier lock end (a slow attempt) never shortens it.
        for _ in 0..5 {
            s.login_failed("victim", 5, now + Duration::minutes(1), denied)
                .await
                .unwrap();
        }
        let (_, still) = s.login_state("victim").await.unwrap();
        assert_eq!(still, until);
        let locked: Vec<_> = events(&s, "session.login").await;
        assert!(
            locked
                .iter()
                .any(|e| e.event["detail"]["locked"] == json!(true))
        );
        assert!(s.verify_audit().await.unwrap().ok);
        // Control: the statement this replaced (`locked_until = excluded.locked_until`,
        // written by an attempt that read the count before the lock) clears the lock.
        sqlx::query(
            "INSERT INTO login_attempts (username, failures, locked_until) VALUES ($1, 1, NULL)
             ON CONFLICT(username) DO UPDATE SET failures = login_attempts.failures + 1,
               locked_until = excluded.locked_until",
        )
        .bind("victim")
        .execute(&s.pool)
        .await
        .unwrap();
        assert_eq!(s.login_state("victim").await.unwrap().1, None);
    }

    /// A correct password whose check began before the lock opens no session.
    #[tokio::test]
    async fn a_correct_password_checked_across_a_lock_opens_no_session() {
        let (_d, s) = store().await;
        s.create_user(&crate::store::tests::new_user("alice"), "t")
            .await
            .unwrap();
        let now = Utc::now();
        for _ in 0..5 {
            s.login_failed("alice", 5, now + Duration::minutes(15), denied)
                .await
                .unwrap();
        }
        let ok = |opened: &bool| {
            AuditEvent::ok("alice", "session.login", None, json!({"opened": opened}))
        };
        let later = now + Duration::seconds(1);
        let opened = s
            .login_succeeded("alice", "h1", "c1", later + Duration::hours(1), later, ok)
            .await
            .unwrap();
        assert!(!opened);
        assert!(s.session("h1").await.unwrap().is_none());
        // Control: after the lock ends the same login opens a session.
        let after = now + Duration::minutes(16);
        let opened = s
            .login_succeeded("alice", "h2", "c2", after + Duration::hours(1), after, ok)
            .await
            .unwrap();
        assert!(opened);
    }
}
