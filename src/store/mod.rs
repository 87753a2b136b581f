//! Store: control-plane persistence (users, sessions, applications with history,
//! pledges, recommendations, extracts, budgets, queries, notebooks, release requests and
//! the audit log) behind one interface.
//!
//! Guarantees: every state change runs in one write transaction (`BEGIN IMMEDIATE`)
//! together with its audit event, so either both commit or neither does. Callers see
//! only the methods of [`Store`]; SQLite is an implementation detail (PostgreSQL is a
//! later issue and will slot in behind the same methods). Queries are runtime-checked
//! (`sqlx::query`), so building kura needs no database.

pub mod budget;
pub mod model;
pub mod retention;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, SqlitePool, Transaction};

use crate::audit::{self, AuditError, AuditEvent, AuditKey, AuditRecord, Verification};
use model::*;

/// Versioned migrations, applied in order; each runs in its own transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "control_plane",
        include_str!("migrations/0001_control_plane.sql"),
    ),
    (2, "dp", include_str!("migrations/0002_dp.sql")),
];

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("audit write failed: {0}")]
    Audit(#[from] AuditError),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database schema version {found} is newer than this kura ({known}); upgrade kura")]
    SchemaTooNew { found: i64, known: i64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Filters for listing audit events.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub user: Option<String>,
    pub application: Option<String>,
    pub action: Option<String>,
    /// Only events with `seq` below this (a stable cursor while the log grows).
    pub before: Option<i64>,
    pub page: u32,
    pub page_size: u32,
}

/// Everything recorded about one query attempt, written in one transaction.
#[derive(Debug, Clone)]
pub struct QueryWrite {
    pub record: QueryRecord,
    /// How to settle this query's ε reservation (DP queries only).
    pub ledger: Option<budget::Settle>,
    /// A fresh DP answer to store for re-release.
    pub cache: Option<budget::CacheWrite>,
    /// Whether this attempt is an execution error (counted per user).
    pub execution_error: bool,
}

/// The control-plane store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    key: AuditKey,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Db(sqlx::Error::Decode(Box::new(e))))
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.as_deref().map(parse_ts).transpose()
}

impl Store {
    /// Open (creating if needed) the SQLite database at `path` and apply migrations.
    pub async fn open(path: &Path, key: AuditKey) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        let store = Self { pool, key };
        store.migrate().await?;
        // Whatever was reserved before this open belongs to a query that can no longer
        // commit (a crash, or a process that stopped): it counts as spent.
        store.convert_reservations(None).await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            .execute(&mut *conn)
            .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *conn)
                .await?;
        let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        drop(conn);
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            )
            .bind(version)
            .bind(name)
            .bind(ts(now()))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn begin(&self) -> Result<Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn audit(&self, conn: &mut SqliteConnection, event: &AuditEvent) -> Result<AuditRecord> {
        Ok(audit::append(conn, &self.key, event).await?)
    }

    /// Record an event that changes no other state (refusals, reads worth logging).
    pub async fn record(&self, event: &AuditEvent) -> Result<AuditRecord> {
        let mut tx = self.begin().await?;
        let rec = self.audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// Verify the audit chain.
    pub async fn verify_audit(&self) -> Result<Verification> {
        let mut conn = self.pool.acquire().await?;
        Ok(audit::verify(&mut conn, &self.key).await?)
    }

    /// List audit events, newest first.
    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let size = f.page_size.clamp(1, 500) as i64;
        let rows = sqlx::query(
            "SELECT seq, at, event, prev, mac FROM audit_log
             WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at <= ?2)
               AND (?3 IS NULL OR actor = ?3) AND (?4 IS NULL OR application = ?4)
               AND (?5 IS NULL OR action = ?5 OR action LIKE ?5 || '.%')
               AND (?8 IS NULL OR seq < ?8)
             ORDER BY seq DESC LIMIT ?6 OFFSET ?7",
        )
        .bind(f.from.map(ts))
        .bind(f.to.map(ts))
        .bind(&f.user)
        .bind(&f.application)
        .bind(&f.action)
        .bind(size)
        .bind(size * f.page as i64)
        .bind(f.before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: r.try_get("seq")?,
                    at: parse_ts(&r.try_get::<String, _>("at")?)?,
                    event: serde_json::from_str(&r.try_get::<String, _>("event")?)?,
                    prev: r.try_get("prev")?,
                    mac: r.try_get("mac")?,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------------ users

    fn user_from_row(r: &SqliteRow) -> Result<User> {
        let roles: Vec<String> = serde_json::from_str(&r.try_get::<String, _>("roles")?)?;
        Ok(User {
            username: r.try_get("username")?,
            roles: roles.iter().filter_map(|s| Role::parse(s)).collect(),
            manufacturer: r.try_get("manufacturer")?,
            display_name: r.try_get("display_name")?,
            affiliation: r.try_get("affiliation")?,
            title: r.try_get("title")?,
            disabled: r.try_get::<i64, _>("disabled")? != 0,
            execution_errors: r.try_get("execution_errors")?,
        })
    }

    /// Create an account.
    pub async fn create_user(&self, u: &NewUser, actor: &str) -> Result<User> {
        let mut tx = self.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE username = ?")
            .bind(&u.username)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "user `{}` already exists",
                u.username
            )));
        }
        let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
        sqlx::query(
            "INSERT INTO users (username, password_hash, roles, manufacturer, display_name, affiliation, title, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(serde_json::to_string(&roles)?)
        .bind(&u.manufacturer)
        .bind(&u.display_name)
        .bind(&u.affiliation)
        .bind(&u.title)
        .bind(ts(now()))
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(
                actor,
                "user.create",
                None,
                json!({"username": u.username, "roles": roles, "manufacturer": u.manufacturer}),
            ),
        )
        .await?;
        tx.commit().await?;
        self.user(&u.username)
            .await?
            .ok_or_else(|| StoreError::NotFound("user".into()))
    }

    pub async fn user(&self, username: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::user_from_row).transpose()
    }

    /// The account and its password hash, for login.
    pub async fn user_with_hash(&self, username: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some((
                Self::user_from_row(&r)?,
                r.try_get("password_hash")?,
            ))),
            None => Ok(None),
        }
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::user_from_row).collect()
    }

    /// Enable or disable an account; disabling also revokes its sessions.
    pub async fn set_disabled(&self, username: &str, disabled: bool, actor: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE users SET disabled = ? WHERE username = ?")
            .bind(disabled as i64)
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("user `{username}`")));
        }
        if disabled {
            sqlx::query(
                "UPDATE sessions SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL",
            )
            .bind(ts(now()))
            .bind(username)
            .execute(&mut *tx)
            .await?;
        }
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        self.audit(
            &mut tx,
            &AuditEvent::ok(actor, action, None, json!({"username": username})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replace a password hash, clear the lockout and revoke existing sessions.
    pub async fn set_password(&self, username: &str, hash: &str, actor: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE users SET password_hash = ? WHERE username = ?")
            .bind(hash)
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("user `{username}`")));
        }
        sqlx::query("DELETE FROM login_attempts WHERE username = ?")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE sessions SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL")
            .bind(ts(now()))
            .bind(username)
            .execute(&mut *tx)
            .await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(
                actor,
                "user.reset_password",
                None,
                json!({"username": username}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // --------------------------------------------------------------- sessions

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
        let mut tx = self.begin().await?;
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
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
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
        let mut tx = self.begin().await?;
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
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
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
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
        )
        .bind(ts(now()))
        .bind(token_hash)
        .execute(&mut *tx)
        .await?;
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    // ----------------------------------------------------------- applications

    fn application_from_row(r: &SqliteRow) -> Result<Application> {
        let status: String = r.try_get("status")?;
        Ok(Application {
            id: r.try_get("id")?,
            status: Status::parse(&status)
                .ok_or_else(|| StoreError::Conflict(format!("unknown stored status `{status}`")))?,
            applicant: r.try_get("applicant")?,
            form: serde_json::from_str(&r.try_get::<String, _>("form")?)?,
            approval: r
                .try_get::<Option<String>, _>("approval")?
                .map(|s| serde_json::from_str(&s))
                .transpose()?,
            pending_change: r
                .try_get::<Option<String>, _>("pending_change")?
                .map(|s| serde_json::from_str(&s))
                .transpose()?,
            revoked_reason: r.try_get("revoked_reason")?,
            created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
            updated_at: parse_ts(&r.try_get::<String, _>("updated_at")?)?,
        })
    }

    /// Create a draft. `id` is generated (`A-<year>-<nnnn>`) unless given.
    pub async fn create_application(
        &self,
        id: Option<&str>,
        applicant: &str,
        form: &ApplicationForm,
    ) -> Result<Application> {
        let mut tx = self.begin().await?;
        let id = match id {
            Some(id) => id.to_string(),
            None => {
                let year = Utc::now().format("%Y").to_string();
                let n: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM applications WHERE id LIKE ?")
                        .bind(format!("A-{year}-%"))
                        .fetch_one(&mut *tx)
                        .await?;
                format!("A-{year}-{:04}", n + 1)
            }
        };
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM applications WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "application `{id}` already exists"
            )));
        }
        let t = ts(now());
        sqlx::query("INSERT INTO applications (id, status, applicant, form, created_at, updated_at) VALUES (?, 'draft', ?, ?, ?, ?)")
            .bind(&id)
            .bind(applicant)
            .bind(serde_json::to_string(form)?)
            .bind(&t)
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        Self::history(&mut tx, &id, applicant, "create", None, "draft", None).await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(
                applicant,
                "application.create",
                Some(&id),
                json!({"title": form.title}),
            ),
        )
        .await?;
        tx.commit().await?;
        self.application(&id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id))
    }

    async fn history(
        conn: &mut SqliteConnection,
        id: &str,
        actor: &str,
        action: &str,
        from: Option<&str>,
        to: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO application_history (application_id, at, actor, action, from_status, to_status, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(ts(now()))
        .bind(actor)
        .bind(action)
        .bind(from)
        .bind(to)
        .bind(reason)
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn application(&self, id: &str) -> Result<Option<Application>> {
        let row = sqlx::query("SELECT * FROM applications WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::application_from_row).transpose()
    }

    pub async fn applications(&self) -> Result<Vec<Application>> {
        let rows = sqlx::query("SELECT * FROM applications ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::application_from_row).collect()
    }

    /// Save a workflow transition: the new application state, a history entry and the
    /// audit event, in one transaction. `expect_updated_at` guards against lost updates
    /// (two reviewers deciding at once): the save fails if the row changed meanwhile.
    pub async fn transition(
        &self,
        app: &Application,
        expect_updated_at: DateTime<Utc>,
        from: Status,
        action: &str,
        reason: Option<&str>,
        event: &AuditEvent,
    ) -> Result<Application> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE applications SET status = ?, form = ?, approval = ?, pending_change = ?, revoked_reason = ?, updated_at = ?
             WHERE id = ? AND updated_at = ?",
        )
        .bind(app.status.as_str())
        .bind(serde_json::to_string(&app.form)?)
        .bind(app.approval.as_ref().map(serde_json::to_string).transpose()?)
        .bind(app.pending_change.as_ref().map(serde_json::to_string).transpose()?)
        .bind(&app.revoked_reason)
        .bind(ts(now()))
        .bind(&app.id)
        .bind(ts(expect_updated_at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "application `{}` changed meanwhile; reload it and try again / 申請が他の操作で更新されました。再読み込みしてください",
                app.id
            )));
        }
        Self::history(
            &mut tx,
            &app.id,
            &event.actor,
            action,
            Some(from.as_str()),
            app.status.as_str(),
            reason,
        )
        .await?;
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
        self.application(&app.id)
            .await?
            .ok_or_else(|| StoreError::NotFound(app.id.clone()))
    }

    pub async fn application_history(&self, id: &str) -> Result<Vec<HistoryEntry>> {
        let rows =
            sqlx::query("SELECT * FROM application_history WHERE application_id = ? ORDER BY id")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoryEntry {
                    at: parse_ts(&r.try_get::<String, _>("at")?)?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    from_status: r.try_get("from_status")?,
                    to_status: r.try_get("to_status")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Record a named user's pledge (form 2). Idempotent.
    pub async fn accept_pledge(&self, id: &str, username: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT OR IGNORE INTO pledges (application_id, username, accepted_at) VALUES (?, ?, ?)")
            .bind(id)
            .bind(username)
            .bind(ts(now()))
            .execute(&mut *tx)
            .await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(username, "application.pledge", Some(id), json!({})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn pledges(&self, id: &str) -> Result<Vec<Pledge>> {
        let rows = sqlx::query(
            "SELECT username, accepted_at FROM pledges WHERE application_id = ? ORDER BY username",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Pledge {
                    username: r.try_get("username")?,
                    accepted_at: parse_ts(&r.try_get::<String, _>("accepted_at")?)?,
                })
            })
            .collect()
    }

    pub async fn has_pledged(&self, id: &str, username: &str) -> Result<bool> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM pledges WHERE application_id = ? AND username = ?")
                .bind(id)
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
        Ok(n.is_some())
    }

    pub async fn add_recommendation(
        &self,
        id: &str,
        reviewer: &str,
        text: &str,
    ) -> Result<Recommendation> {
        let mut tx = self.begin().await?;
        let at = now();
        sqlx::query(
            "INSERT INTO recommendations (application_id, at, reviewer, text) VALUES (?, ?, ?, ?)",
        )
        .bind(id)
        .bind(ts(at))
        .bind(reviewer)
        .bind(text)
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(
                reviewer,
                "application.recommendation",
                Some(id),
                json!({"text": text}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(Recommendation {
            at,
            reviewer: reviewer.into(),
            text: text.into(),
        })
    }

    pub async fn recommendations(&self, id: &str) -> Result<Vec<Recommendation>> {
        let rows = sqlx::query(
            "SELECT at, reviewer, text FROM recommendations WHERE application_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Recommendation {
                    at: parse_ts(&r.try_get::<String, _>("at")?)?,
                    reviewer: r.try_get("reviewer")?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }

    // --------------------------------------------------------------- extracts

    /// Register a (re)built extract.
    pub async fn set_extract(
        &self,
        id: &str,
        extract_id: &str,
        path: &str,
        actor: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO extracts (application_id, extract_id, path, built_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(application_id) DO UPDATE SET extract_id = excluded.extract_id, path = excluded.path,
               built_at = excluded.built_at, destroyed_at = NULL",
        )
        .bind(id)
        .bind(extract_id)
        .bind(path)
        .bind(ts(now()))
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(
                actor,
                "extract.build",
                Some(id),
                json!({"extract_id": extract_id}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn extract(&self, id: &str) -> Result<Option<ExtractInfo>> {
        let row = sqlx::query("SELECT * FROM extracts WHERE application_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(ExtractInfo {
                application_id: r.try_get("application_id")?,
                extract_id: r.try_get("extract_id")?,
                path: r.try_get("path")?,
                built_at: parse_ts(&r.try_get::<String, _>("built_at")?)?,
                destroyed_at: opt_ts(r.try_get("destroyed_at")?)?,
            })),
            None => Ok(None),
        }
    }

    /// Log the destruction of an extract (the caller removed the files).
    pub async fn extract_destroyed(&self, id: &str, actor: &str, reason: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE extracts SET destroyed_at = ? WHERE application_id = ?")
            .bind(ts(now()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(
                actor,
                "extract.destroy",
                Some(id),
                json!({"reason": reason}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---------------------------------------------------------------- queries

    /// Record one query attempt: history row, settlement of its ε reservation, the DP
    /// release cache entry, per-user error counter and the audit event, all in one
    /// transaction. If this fails, the caller must not
    /// release the result (no audit, no answer).
    pub async fn record_query(&self, q: &QueryWrite, event: &AuditEvent) -> Result<AuditRecord> {
        let mut tx = self.begin().await?;
        let r = &q.record;
        sqlx::query(
            "INSERT INTO queries (query_id, application_id, username, at, sql, outcome, code, duration_ms, epsilon_spent, suppressed_cells, dropped_rows)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.query_id)
        .bind(&r.application_id)
        .bind(&r.username)
        .bind(ts(r.at))
        .bind(&r.sql)
        .bind(&r.outcome)
        .bind(&r.code)
        .bind(r.duration_ms)
        .bind(r.epsilon_spent)
        .bind(r.suppressed_cells)
        .bind(r.dropped_rows)
        .execute(&mut *tx)
        .await?;
        if let Some(settle) = &q.ledger {
            budget::settle(&mut tx, settle).await?;
        }
        if let Some(c) = &q.cache {
            budget::insert_cache(&mut tx, c).await?;
        }
        if q.execution_error {
            sqlx::query(
                "UPDATE users SET execution_errors = execution_errors + 1 WHERE username = ?",
            )
            .bind(&r.username)
            .execute(&mut *tx)
            .await?;
        }
        let rec = self.audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(rec)
    }

    pub async fn queries(
        &self,
        application: Option<&str>,
        username: Option<&str>,
        limit: i64,
    ) -> Result<Vec<QueryRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM queries WHERE (?1 IS NULL OR application_id = ?1) AND (?2 IS NULL OR username = ?2)
             ORDER BY at DESC LIMIT ?3",
        )
        .bind(application)
        .bind(username)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueryRecord {
                    query_id: r.try_get("query_id")?,
                    application_id: r.try_get("application_id")?,
                    username: r.try_get("username")?,
                    at: parse_ts(&r.try_get::<String, _>("at")?)?,
                    sql: r.try_get("sql")?,
                    outcome: r.try_get("outcome")?,
                    code: r.try_get("code")?,
                    duration_ms: r.try_get("duration_ms")?,
                    epsilon_spent: r.try_get("epsilon_spent")?,
                    suppressed_cells: r.try_get("suppressed_cells")?,
                    dropped_rows: r.try_get("dropped_rows")?,
                })
            })
            .collect()
    }

    // -------------------------------------------------------------- notebooks

    fn notebook_from_row(r: &SqliteRow) -> Result<Notebook> {
        Ok(Notebook {
            id: r.try_get("id")?,
            owner: r.try_get("owner")?,
            application_id: r.try_get("application_id")?,
            title: r.try_get("title")?,
            cells: serde_json::from_str(&r.try_get::<String, _>("cells")?)?,
            created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
            updated_at: parse_ts(&r.try_get::<String, _>("updated_at")?)?,
        })
    }

    pub async fn notebooks(&self, owner: &str, application: Option<&str>) -> Result<Vec<Notebook>> {
        let rows = sqlx::query("SELECT * FROM notebooks WHERE owner = ?1 AND (?2 IS NULL OR application_id = ?2) ORDER BY updated_at DESC")
            .bind(owner)
            .bind(application)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::notebook_from_row).collect()
    }

    pub async fn notebook(&self, id: &str) -> Result<Option<Notebook>> {
        let row = sqlx::query("SELECT * FROM notebooks WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::notebook_from_row).transpose()
    }

    /// Create (when `id` is new) or replace a notebook.
    pub async fn save_notebook(&self, nb: &Notebook) -> Result<Notebook> {
        let mut tx = self.begin().await?;
        let t = ts(now());
        sqlx::query(
            "INSERT INTO notebooks (id, owner, application_id, title, cells, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET title = excluded.title, cells = excluded.cells, updated_at = excluded.updated_at",
        )
        .bind(&nb.id)
        .bind(&nb.owner)
        .bind(&nb.application_id)
        .bind(&nb.title)
        .bind(serde_json::to_string(&nb.cells)?)
        .bind(&t)
        .bind(&t)
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(
                &nb.owner,
                "notebook.save",
                Some(&nb.application_id),
                json!({"notebook": nb.id}),
            ),
        )
        .await?;
        tx.commit().await?;
        self.notebook(&nb.id)
            .await?
            .ok_or_else(|| StoreError::NotFound(nb.id.clone()))
    }

    pub async fn delete_notebook(&self, nb: &Notebook) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM notebooks WHERE id = ?")
            .bind(&nb.id)
            .execute(&mut *tx)
            .await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(
                &nb.owner,
                "notebook.delete",
                Some(&nb.application_id),
                json!({"notebook": nb.id}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // --------------------------------------------------------------- releases

    pub async fn create_release(&self, r: &ReleaseRequest) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO releases (id, application_id, requester, query_id, justification, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.application_id)
        .bind(&r.requester)
        .bind(&r.query_id)
        .bind(&r.justification)
        .bind(&r.status)
        .bind(ts(r.created_at))
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            &AuditEvent::ok(
                &r.requester,
                "release.request",
                Some(&r.application_id),
                json!({"release": r.id, "query_id": r.query_id}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn release(&self, id: &str) -> Result<Option<ReleaseRequest>> {
        let row = sqlx::query("SELECT * FROM releases WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| -> Result<ReleaseRequest> {
            Ok(ReleaseRequest {
                id: r.try_get("id")?,
                application_id: r.try_get("application_id")?,
                requester: r.try_get("requester")?,
                query_id: r.try_get("query_id")?,
                justification: r.try_get("justification")?,
                status: r.try_get("status")?,
                created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
            })
        })
        .transpose()
    }

    /// Decide a pending release request: set `status` and write the decision's audit
    /// event (which carries the reviewer and the reason) in one transaction. A request
    /// that is no longer pending is a conflict, so two reviewers cannot both decide it.
    pub async fn decide_release(
        &self,
        id: &str,
        status: &str,
        event: &AuditEvent,
    ) -> Result<ReleaseRequest> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE releases SET status = ? WHERE id = ? AND status = 'pending'")
            .bind(status)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "release request `{id}` has already been decided / この公表申請は既に判断済みです"
            )));
        }
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
        self.release(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    /// Close the pool (tests that reopen the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::from_bytes(&[1u8; 32]).unwrap();
        let s = Store::open(&dir.path().join("kura.db"), key).await.unwrap();
        (dir, s)
    }

    fn new_user(name: &str) -> NewUser {
        NewUser {
            username: name.into(),
            password_hash: "x".into(),
            roles: vec![Role::Researcher],
            manufacturer: None,
            display_name: String::new(),
            affiliation: String::new(),
            title: String::new(),
        }
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_state_changes_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::from_bytes(&[1u8; 32]).unwrap();
        let s = Store::open(&dir.path().join("kura.db"), key.clone())
            .await
            .unwrap();
        s.create_user(&new_user("alice"), "admin").await.unwrap();
        s.close().await;
        let s = Store::open(&dir.path().join("kura.db"), key).await.unwrap();
        assert!(s.user("alice").await.unwrap().is_some());
        let v = s.verify_audit().await.unwrap();
        assert!(v.ok);
        assert_eq!(v.events, 1);
    }

    #[tokio::test]
    async fn duplicate_user_is_a_conflict_and_writes_no_audit() {
        let (_d, s) = store().await;
        s.create_user(&new_user("alice"), "admin").await.unwrap();
        assert!(matches!(
            s.create_user(&new_user("alice"), "admin").await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.verify_audit().await.unwrap().events, 1);
    }

    #[tokio::test]
    async fn stale_transition_is_refused() {
        let (_d, s) = store().await;
        s.create_user(&new_user("alice"), "admin").await.unwrap();
        let app = s
            .create_application(None, "alice", &ApplicationForm::default())
            .await
            .unwrap();
        let stale = app.updated_at;
        let mut next = app.clone();
        next.status = Status::Submitted;
        let ev = AuditEvent::ok("alice", "application.submit", Some(&app.id), json!({}));
        s.transition(&next, stale, Status::Draft, "submit", None, &ev)
            .await
            .unwrap();
        // Same expectation again: the row has moved on, so the second writer loses.
        assert!(matches!(
            s.transition(&next, stale, Status::Draft, "submit", None, &ev)
                .await,
            Err(StoreError::Conflict(_))
        ));
        let h = s.application_history(&app.id).await.unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].to_status, "submitted");
    }
}
