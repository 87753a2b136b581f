//! Store: control-plane persistence (users, sessions, applications with history,
//! pledges, recommendations, extracts, budgets, queries, notebooks, release requests and
//! the audit log) behind one interface.
//!
//! Guarantees: every state change runs in one write transaction (`BEGIN IMMEDIATE`)
//! together with its audit event, so either both commit or neither does. The sections
//! (one file each) make their changes through `Store::audited`, which is the only place
//! that pairs statements with their event and commits; the ε ledger, whose conversions
//! each carry their own event, uses the bare `Store::transaction` underneath it.
//! Callers see only the methods of [`Store`]; SQLite is an implementation detail
//! (PostgreSQL is a later issue and will slot in behind the same methods). Queries are
//! runtime-checked (`sqlx::query`), so building kura needs no database. This file holds
//! the store itself: opening, migrations, errors, the transaction helpers and the audit
//! log.

mod applications;
pub mod budget;
mod extracts;
pub mod ledger;
pub mod model;
mod notebooks;
// oversight (issue 13 §2 §4): alerts, filed usage reports, publications
pub mod oversight;
mod queries;
mod releases;
pub mod retention;
// seeds (issue 16): facility binding, notices, the public register's reads
pub mod seeds;
mod sessions;
mod users;

pub use queries::QueryWrite;

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::audit::{self, AuditError, AuditEvent, AuditKey, AuditRecord, Verification};

/// Versioned migrations, applied in order; each runs in its own transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "control_plane",
        include_str!("migrations/0001_control_plane.sql"),
    ),
    (2, "dp", include_str!("migrations/0002_dp.sql")),
    (
        3,
        "release_ledger",
        include_str!("migrations/0003_release_ledger.sql"),
    ),
    // oversight (issue 13 §2 §4)
    (
        5,
        "oversight",
        include_str!("migrations/0005_oversight.sql"),
    ),
    // seeds (issue 16): facility accounts, notices
    (6, "seeds", include_str!("migrations/0006_seeds.sql")),
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

/// The control-plane store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    key: AuditKey,
    /// Alert rules evaluated as each event is appended (none unless `with_alerts`).
    alerts: std::sync::Arc<audit::alert::AlertRules>,
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

/// An audit entry read back (`seq, at, event, prev, mac`).
fn record_of(r: &sqlx::sqlite::SqliteRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        at: parse_ts(&r.try_get::<String, _>("at")?)?,
        event: serde_json::from_str(&r.try_get::<String, _>("event")?)?,
        prev: r.try_get("prev")?,
        mac: r.try_get("mac")?,
    })
}

/// One bound statement, ready to run in a transaction.
type Statement<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Run one statement inside the caller's transaction; the number of rows it changed.
async fn exec(conn: &mut SqliteConnection, statement: Statement<'_>) -> Result<u64> {
    Ok(statement.execute(conn).await?.rows_affected())
}

/// The audit event of a state change. It is usually known before the statements run;
/// a creation that allocates its id inside the transaction builds it from that id.
trait EventFor<T> {
    fn event_for(&self, value: &T) -> Cow<'_, AuditEvent>;
}

impl<T> EventFor<T> for AuditEvent {
    fn event_for(&self, _: &T) -> Cow<'_, AuditEvent> {
        Cow::Borrowed(self)
    }
}

impl<T, F: Fn(&T) -> AuditEvent> EventFor<T> for F {
    fn event_for(&self, value: &T) -> Cow<'_, AuditEvent> {
        Cow::Owned(self(value))
    }
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
            .connect_with(opts.clone())
            .await?;
        let mut store = Self {
            pool,
            key,
            alerts: Default::default(),
        };
        if store.migrate().await? {
            // A connection of the pool may hold the schema from before a migration (one
            // that ran on another connection); its next statement over an altered table
            // would be prepared against the old columns (an ALTER TABLE ADD COLUMN then
            // changes `SELECT *` under sqlx's feet). Serve from fresh connections.
            store.pool.close().await;
            store.pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(opts)
                .await?;
        }
        // Whatever was reserved before this open belongs to a query that can no longer
        // commit (a crash, or a process that stopped): it counts as spent.
        store.convert_reservations(None).await?;
        Ok(store)
    }

    /// Apply the migrations this database lacks; whether any was applied.
    async fn migrate(&self) -> Result<bool> {
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
        // Versions are applied by set, not by "above the highest": branches add migrations
        // in parallel (4 and 5 of issue 13), and a database that got 5 first still gets 4.
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *conn)
            .await?;
        drop(conn);
        let mut any = false;
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| !applied.contains(&m.0)) {
            any = true;
            self.transaction(async |tx| {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                let applied = sqlx::query(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                )
                .bind(version)
                .bind(name)
                .bind(ts(now()));
                exec(tx, applied).await
            })
            .await?;
        }
        Ok(any)
    }

    /// Run `f` in one write transaction: `BEGIN IMMEDIATE` takes SQLite's write lock up
    /// front, so the reads `f` makes stay true until it commits. Any error drops the
    /// transaction, which rolls it back. State changes use `Self::audited`; this bare
    /// form is for the writes that append their audit events themselves (the ε ledger)
    /// or have none (migrations).
    async fn transaction<T>(
        &self,
        f: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T>,
    ) -> Result<T> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let value = f(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// Run the statements `f` and append `event` to the audit chain in one write
    /// transaction (see `Self::transaction`): the change commits with its audit event
    /// or not at all. Returns what `f` returned and the appended record.
    async fn audited<T>(
        &self,
        event: &impl EventFor<T>,
        f: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T>,
    ) -> Result<(T, AuditRecord)> {
        self.transaction(async move |tx| {
            let value = f(tx).await?;
            let record = self.audit(tx, &event.event_for(&value)).await?;
            Ok((value, record))
        })
        .await
    }

    /// Append one event to the audit chain, inside the caller's transaction.
    /// The alert rules run here, in the same transaction (`audit::alert`).
    async fn audit(&self, conn: &mut SqliteConnection, event: &AuditEvent) -> Result<AuditRecord> {
        let record = audit::append(conn, &self.key, event).await?;
        audit::alert::after_append(&self.alerts, conn, &self.key, &record, event).await;
        Ok(record)
    }

    /// Record an event that changes no other state (refusals, reads worth logging).
    pub async fn record(&self, event: &AuditEvent) -> Result<AuditRecord> {
        let ((), record) = self.audited(event, async |_| Ok(())).await?;
        Ok(record)
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
        rows.iter().map(record_of).collect()
    }

    /// Close the pool (tests that reopen the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Fixtures shared by the store's tests, and the tests of the store as a whole.
#[cfg(test)]
mod tests {
    use super::*;
    use model::{ApplicationForm, NewUser, Role, Status};
    use serde_json::json;

    pub(super) fn key() -> AuditKey {
        AuditKey::from_bytes(&[1u8; 32]).unwrap()
    }

    pub(super) async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("kura.db"), key())
            .await
            .unwrap();
        (dir, s)
    }

    pub(super) fn new_user(name: &str) -> NewUser {
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

    /// The first page of audit events of `action` (and its sub-actions), newest first.
    pub(super) async fn events(s: &Store, action: &str) -> Vec<AuditRecord> {
        s.audit_events(&AuditFilter {
            action: Some(action.into()),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_state_changes_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("kura.db"), key())
            .await
            .unwrap();
        s.create_user(&new_user("alice"), "admin").await.unwrap();
        s.close().await;
        let s = Store::open(&dir.path().join("kura.db"), key())
            .await
            .unwrap();
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
