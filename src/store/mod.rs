//! Store: control-plane persistence (users, sessions, applications with history,
//! pledges, recommendations, extracts, budgets, queries, notebooks, release requests and
//! the audit log) behind one interface, on SQLite (embedded default) or PostgreSQL
//! (production), selected by the store URL (`store.url`, see `dialect`).
//!
//! Guarantees: every state change runs in one serialised write transaction (SQLite's
//! `BEGIN IMMEDIATE`, PostgreSQL's writers' advisory lock: `dialect`) together with its
//! audit event, so either both commit or neither does. The sections (one file each) make
//! their changes through `Store::audited`, which is the only place that pairs statements
//! with their event and commits; the ε ledger, whose conversions each carry their own
//! event, uses the bare `Store::transaction` underneath it. Callers see only the methods
//! of [`Store`]; the database is an implementation detail. Queries are runtime-checked
//! (`sqlx::query` through the `Any` driver), so building kura needs no database. This
//! file holds the store itself: opening, migrations, errors, the transaction helpers and
//! the audit log.
//!
//! Adding a migration (also when merging a branch that added one): write it in portable
//! SQL (types TEXT / INTEGER / BIGINT / REAL / BLOB, times as RFC 3339 TEXT, no
//! AUTOINCREMENT, `ON CONFLICT … DO NOTHING` instead of `INSERT OR IGNORE`) as
//! `migrations/NNNN_name.sql` and list it in [`MIGRATIONS`] with `postgres: None`; it is
//! translated for PostgreSQL by `dialect::postgres_ddl`. Only a migration that needs
//! SQLite-only statements (triggers, date functions) gets a hand-written twin
//! `migrations/postgres/NNNN_name.sql`. The tests of `dialect` refuse a migration that
//! would send SQLite-only SQL to PostgreSQL, and run every migration on both databases.

mod applications;
// production (issue 14): portable export and import of every table
pub mod backup;
// annual reports (issue 13 §3)
pub mod annual;
pub mod budget;
pub mod dialect;
mod extracts;
pub mod ledger;
pub mod model;
mod notebooks;
// oversight (issue 13 §2 §4): alerts, filed usage reports, publications
pub mod oversight;
mod queries;
// the output airlock (issue 13 §1): stored answers, release requests and their files
pub mod releases;
pub mod results;
pub mod retention;
// seeds (issue 16): facility binding, notices, the public register's reads
pub mod seeds;
mod sessions;
#[doc(hidden)]
pub mod testing;
mod users;

pub use dialect::Dialect;
pub use extracts::ExtractWrite;
pub use queries::QueryWrite;
pub use sessions::FailedLogin;

use std::borrow::Cow;
use std::path::Path;

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::audit::{self, AuditError, AuditEvent, AuditKey, AuditRecord, Verification};
use dialect::Migration;

/// Versioned migrations, applied by set (see the module documentation); each runs in
/// its own transaction.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "control_plane",
        sql: include_str!("migrations/0001_control_plane.sql"),
        postgres: Some(include_str!("migrations/postgres/0001_control_plane.sql")),
    },
    Migration {
        version: 2,
        name: "dp",
        sql: include_str!("migrations/0002_dp.sql"),
        postgres: Some(include_str!("migrations/postgres/0002_dp.sql")),
    },
    Migration {
        version: 3,
        name: "release_ledger",
        sql: include_str!("migrations/0003_release_ledger.sql"),
        postgres: None,
    },
    // the output airlock (issue 13 §1)
    Migration {
        version: 4,
        name: "airlock",
        sql: include_str!("migrations/0004_airlock.sql"),
        postgres: None,
    },
    // oversight (issue 13 §2 §4)
    Migration {
        version: 5,
        name: "oversight",
        sql: include_str!("migrations/0005_oversight.sql"),
        postgres: None,
    },
    // seeds (issue 16): facility accounts, notices
    Migration {
        version: 6,
        name: "seeds",
        sql: include_str!("migrations/0006_seeds.sql"),
        postgres: None,
    },
    // annual reports (issue 13 §3)
    Migration {
        version: 9,
        name: "annual_reports",
        sql: include_str!("migrations/0009_annual_reports.sql"),
        postgres: None,
    },
    // differencing across applications (issue 11)
    Migration {
        version: 10,
        name: "ledger_by_size",
        sql: include_str!("migrations/0010_ledger_by_size.sql"),
        postgres: None,
    },
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
    /// A stored record no longer matches what the signed audit log says of it.
    #[error("integrity check failed: {0}")]
    Tampered(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Checkpoint(#[from] audit::checkpoint::CheckpointError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// The database could not write because its disk is full (SQLite `SQLITE_FULL`,
    /// PostgreSQL `53100 disk_full`) — an operator problem, not a bug.
    pub fn is_storage_full(&self) -> bool {
        let db = match self {
            StoreError::Db(e) | StoreError::Audit(AuditError::Db(e)) => e,
            _ => return false,
        };
        match db {
            sqlx::Error::Database(d) => {
                let code = d.code().unwrap_or_default();
                // SQLite reports extended codes; the primary code is the low byte.
                code == "53100" || code.parse::<i64>().is_ok_and(|c| c & 0xff == 13)
            }
            sqlx::Error::Io(e) => e.raw_os_error() == Some(28),
            _ => false,
        }
    }
}

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
    /// Only the event with this reference id (the `ref` a caller quotes).
    pub reference: Option<String>,
    /// Only events with this outcome (`ok`, `denied`, `error`).
    pub outcome: Option<String>,
}

/// What opening a store does besides migrating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The server (`kura serve`, `kura demo`): reservations left by an earlier run (a
    /// crash between reserve and commit) can no longer settle and become spent.
    Server,
    /// A command-line tool running beside a server: it leaves reservations alone, since
    /// they may belong to queries the running server is executing.
    Tool,
}

/// The control-plane store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    key: AuditKey,
    /// Alert rules evaluated as each event is appended (none unless `with_alerts`).
    alerts: std::sync::Arc<audit::alert::AlertRules>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// The store URL of a SQLite file (created if missing).
pub fn sqlite_url(path: &Path) -> String {
    // Percent-encode what a URL would misread; sqlx decodes the path again.
    let mut p = String::new();
    for c in path.display().to_string().chars() {
        match c {
            '%' | '?' | '#' | ' ' => p.push_str(&format!("%{:02X}", c as u32)),
            c => p.push(c),
        }
    }
    format!("sqlite://{p}?mode=rwc")
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
fn record_of(r: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        at: parse_ts(&r.try_get::<String, _>("at")?)?,
        event: serde_json::from_str(&r.try_get::<String, _>("event")?)?,
        prev: r.try_get("prev")?,
        mac: r.try_get("mac")?,
    })
}

/// One bound statement, ready to run in a transaction.
type Statement<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Run one statement inside the caller's transaction; the number of rows it changed.
async fn exec(conn: &mut AnyConnection, statement: Statement<'_>) -> Result<u64> {
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
    /// Open (creating if needed) the SQLite database at `path` as the server does (see
    /// [`Opening::Server`]) and apply migrations.
    pub async fn open(path: &Path, key: AuditKey) -> Result<Self> {
        Self::connect(&sqlite_url(path), key, Opening::Server).await
    }

    /// Open the store at `url` (`sqlite://…` or `postgres://…`), apply migrations, and
    /// settle what an earlier run left behind when opened by the server.
    pub async fn connect(url: &str, key: AuditKey, opening: Opening) -> Result<Self> {
        Self::connect_with(url, key, opening, 8).await
    }

    /// [`Self::connect`] with a pool of `max_connections`.
    pub async fn connect_with(
        url: &str,
        key: AuditKey,
        opening: Opening,
        max_connections: u32,
    ) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of_url(url)?;
        let pool = dialect
            .pool_options(max_connections.max(1))
            .connect(url)
            .await?;
        let mut store = Self {
            pool,
            dialect,
            key,
            alerts: Default::default(),
        };
        if store.migrate().await? {
            // seeds (issue 16): a connection of the pool may hold the schema from before a
            // migration that ran on another connection; its next statement over an altered
            // table would be prepared against the old columns (migration 6's ALTER TABLE
            // ADD COLUMN changes `SELECT * FROM users` under sqlx's feet). Serve from fresh
            // connections.
            store.pool.close().await;
            store.pool = dialect
                .pool_options(max_connections.max(1))
                .connect(url)
                .await?;
        }
        if opening == Opening::Server {
            // Whatever was reserved before this open belongs to a query that can no
            // longer commit (a crash, or a process that stopped): it counts as spent.
            store.convert_reservations(None).await?;
        }
        Ok(store)
    }

    /// A connection of the pool. Statements run on it (`&mut *conn`) rather than on
    /// `&Pool`: the pool's executor carries a higher-ranked bound that rustc cannot prove
    /// for the `Any` driver inside `Send` futures.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// The database this store runs on.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Apply the migrations this database lacks; whether any was applied.
    async fn migrate(&self) -> Result<bool> {
        self.transaction(async |tx| {
            let create = sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
            exec(tx, create).await
        })
        .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *self.conn().await?)
                .await?;
        let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        // Versions are applied by set, not by "above the highest": branches add migrations
        // in parallel (4 and 5 of issue 13), and a database that got 5 first still gets 4.
        // The check is repeated under the writers' lock: two processes starting at once on
        // one PostgreSQL database apply each migration once.
        let mut any = false;
        for m in MIGRATIONS {
            let sql = self.dialect.migration(m);
            any |= self
                .transaction(async |tx| {
                    let done: Option<i64> = sqlx::query_scalar(
                        "SELECT version FROM schema_migrations WHERE version = $1",
                    )
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if done.is_some() {
                        return Ok(0);
                    }
                    sqlx::Executor::execute(&mut *tx, sql.as_ref()).await?;
                    let applied = sqlx::query(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(m.version)
                .bind(m.name)
                .bind(ts(now()));
                    exec(tx, applied).await
                })
                .await?
                > 0;
        }
        Ok(any)
    }

    /// Run `f` in one write transaction that holds the writers' lock from its start
    /// (`dialect`), so the reads `f` makes stay true until it commits. Any error drops the
    /// transaction, which rolls it back. State changes use `Self::audited`; this bare
    /// form is for the writes that append their audit events themselves (the ε ledger)
    /// or have none (migrations).
    async fn transaction<T>(
        &self,
        f: impl AsyncFnOnce(&mut AnyConnection) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.pool.acquire().await?;
        let outcome = async {
            let mut tx = sqlx::Connection::begin_with(&mut *conn, self.dialect.begin()).await?;
            self.dialect.lock_writers(&mut tx).await?;
            let value = f(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        if outcome.is_err() {
            // A failed commit (a full disk: SQLite has already rolled back) can leave sqlx
            // counting an open transaction on the connection, which would refuse every
            // later `BEGIN`: such a connection is closed rather than reused.
            conn.close_on_drop();
        }
        outcome
    }

    /// Run the statements `f` and append `event` to the audit chain in one write
    /// transaction (see `Self::transaction`): the change commits with its audit event
    /// or not at all. Returns what `f` returned and the appended record.
    async fn audited<T>(
        &self,
        event: &impl EventFor<T>,
        f: impl AsyncFnOnce(&mut AnyConnection) -> Result<T>,
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
    async fn audit(&self, conn: &mut AnyConnection, event: &AuditEvent) -> Result<AuditRecord> {
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
    /// The fingerprint of the key that signs the audit chain (never the key).
    pub fn audit_key_fingerprint(&self) -> String {
        self.key.fingerprint()
    }

    pub async fn verify_audit(&self) -> Result<Verification> {
        self.verify_audit_against(&[]).await
    }

    /// Verify the audit chain and that it still holds every checkpoint's head.
    pub async fn verify_audit_against(
        &self,
        checkpoints: &[audit::checkpoint::Checkpoint],
    ) -> Result<Verification> {
        let mut conn = self.pool.acquire().await?;
        Ok(audit::verify(&mut conn, &self.key, checkpoints).await?)
    }

    /// The newest audit entry: `(seq, mac)`, or `None` for an empty log.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        let row = sqlx::query("SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("mac")?)))
            .transpose()
    }

    /// The audit key (checkpoints are signed with it, under their own framing).
    pub fn audit_key(&self) -> &AuditKey {
        &self.key
    }

    /// Sign the current head and write it to `dir` as a checkpoint, unless the log is
    /// empty or its head is still entry `unless_seq` (nothing new to anchor).
    pub async fn write_checkpoint(
        &self,
        dir: &Path,
        unless_seq: Option<i64>,
    ) -> Result<Option<audit::checkpoint::Checkpoint>> {
        let Some((seq, head)) = self.audit_head().await? else {
            return Ok(None);
        };
        if unless_seq == Some(seq) {
            return Ok(None);
        }
        let c = audit::checkpoint::Checkpoint::sign(&self.key, seq, &head, now());
        audit::checkpoint::write(dir, &c)?;
        Ok(Some(c))
    }

    /// List audit events, newest first.
    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let size = f.page_size.clamp(1, 500) as i64;
        let rows = sqlx::query(
            "SELECT seq, at, event, prev, mac FROM audit_log
             WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at <= $2)
               AND ($3 IS NULL OR actor = $3) AND ($4 IS NULL OR application = $4)
               AND ($5 IS NULL OR action = $5 OR action LIKE $5 || '.%')
               AND ($8 IS NULL OR seq < $8)
               AND ($9 IS NULL OR reference = $9) AND ($10 IS NULL OR outcome = $10)
             ORDER BY seq DESC LIMIT $6 OFFSET $7",
        )
        .bind(f.from.map(ts))
        .bind(f.to.map(ts))
        .bind(&f.user)
        .bind(&f.application)
        .bind(&f.action)
        .bind(size)
        .bind(size * f.page as i64)
        .bind(f.before)
        .bind(&f.reference)
        .bind(&f.outcome)
        .fetch_all(&mut *self.conn().await?)
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
        let s = testing::open(dir.path(), key()).await;
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
        let s = testing::open(dir.path(), key()).await;
        s.create_user(&new_user("alice"), "admin").await.unwrap();
        s.close().await;
        let s = testing::open(dir.path(), key()).await;
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
