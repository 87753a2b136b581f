//! Store, dialects: the two databases kura runs on — SQLite (the embedded default, one
//! file in the data directory) and PostgreSQL (production: `store.url = "postgres://…"`)
//! — and the few places where they differ. Every statement of the store is written once,
//! in portable SQL with `$1, $2` placeholders, and runs through sqlx's `Any` driver on
//! either; what cannot be written portably lives here.
//!
//! Guarantees:
//! - write transactions are serialised on both: SQLite's `BEGIN IMMEDIATE` takes the
//!   database write lock up front; on PostgreSQL every write transaction first takes one
//!   transaction-scoped advisory lock ([`WRITERS_LOCK`]), so the reads a transaction makes
//!   stay true until it commits, exactly as on SQLite. The audit chain (whose next `seq`
//!   and `prev` are read inside the appending transaction) therefore stays linear under
//!   any number of concurrent writers and servers sharing one database;
//! - the migrations are the same files on both: a portable migration is translated
//!   type by type ([`postgres_ddl`]); one with SQLite-only statements (triggers,
//!   `strftime`) has a PostgreSQL twin under `migrations/postgres/`, checked by a test to
//!   create the same tables and columns.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;

use super::{Result, StoreError};

/// Key of PostgreSQL's advisory lock that serialises kura's write transactions
/// (`"kura"` in ASCII). Advisory locks are per database, so two kura databases on one
/// cluster do not contend.
pub const WRITERS_LOCK: i64 = 0x6b75_7261;

/// The database behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect of a store URL (`sqlite://…` or `postgres://…` / `postgresql://…`).
    pub fn of_url(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            _ => Err(StoreError::Config(format!(
                "store.url must start with sqlite:// or postgres:// (got `{scheme}:`) / \
                 store.url は sqlite:// または postgres:// で始めてください"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// The pool of this dialect: SQLite connections get WAL, `synchronous = FULL` (a
    /// committed audit event survives power loss), foreign keys and a busy timeout.
    pub(super) fn pool_options(self, max_connections: u32) -> AnyPoolOptions {
        let opts = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30));
        match self {
            Dialect::Postgres => opts,
            Dialect::Sqlite => opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(
                        &mut *conn,
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                    )
                    .await?;
                    Ok(())
                })
            }),
        }
    }

    /// The statement that opens a write transaction.
    pub(super) fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Take the writers' lock inside a just-opened write transaction (PostgreSQL; SQLite
    /// holds it since `BEGIN IMMEDIATE`). Released by commit or rollback.
    pub(super) async fn lock_writers(self, conn: &mut AnyConnection) -> Result<()> {
        if self == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WRITERS_LOCK)
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// The SQL of a migration in this dialect.
    pub(super) fn migration(self, m: &Migration) -> Cow<'static, str> {
        match (self, m.postgres) {
            (Dialect::Sqlite, _) => Cow::Borrowed(m.sql),
            (Dialect::Postgres, Some(own)) => Cow::Borrowed(own),
            (Dialect::Postgres, None) => Cow::Owned(postgres_ddl(m.sql)),
        }
    }
}

/// One schema migration: portable SQL, plus a PostgreSQL twin when the portable text
/// holds SQLite-only statements.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
    pub postgres: Option<&'static str>,
}

/// Translate portable DDL to PostgreSQL, word by word outside string literals:
/// `INTEGER PRIMARY KEY [AUTOINCREMENT]` becomes an identity column (SQLite assigns
/// such keys when an insert omits them; explicit values are still accepted),
/// `INTEGER` → `BIGINT` (SQLite integers are 64-bit), `REAL` → `DOUBLE PRECISION`
/// (SQLite reals are doubles; PostgreSQL's REAL is 32-bit), `BLOB` → `BYTEA`.
pub fn postgres_ddl(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        if c == '\'' {
            let end = rest[1..].find('\'').map(|i| i + 2).unwrap_or(rest.len());
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else if c == '-' && rest.starts_with("--") {
            let end = rest.find('\n').unwrap_or(rest.len());
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let (word, after) = rest.split_at(end);
            rest = after;
            if word == "INTEGER"
                && let Some(tail) = strip_words(rest, &["PRIMARY", "KEY"])
            {
                out.push_str("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
                rest = strip_words(tail, &["AUTOINCREMENT"]).unwrap_or(tail);
                continue;
            }
            out.push_str(match word {
                "INTEGER" => "BIGINT",
                "REAL" => "DOUBLE PRECISION",
                "BLOB" => "BYTEA",
                other => other,
            });
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// `text` after the whitespace-separated `words`, if it starts with them.
fn strip_words<'a>(text: &'a str, words: &[&str]) -> Option<&'a str> {
    let mut rest = text;
    for w in words {
        let trimmed = rest.trim_start();
        let tail = trimmed.strip_prefix(w)?;
        if tail.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        rest = tail;
    }
    Some(rest)
}

/// SQLite-only constructs that must not reach PostgreSQL through [`postgres_ddl`]; a
/// migration holding one needs a twin under `migrations/postgres/`.
pub const SQLITE_ONLY: &[&str] = &[
    "AUTOINCREMENT",
    "INSERT OR",
    "strftime(",
    "datetime(",
    "RAISE(",
    "CREATE TRIGGER",
    "WITHOUT ROWID",
    "PRAGMA",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_types_translate_word_by_word() {
        let sql = "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, \
                   x REAL, b BLOB, note TEXT DEFAULT 'INTEGER REAL', interval_s INTEGER); -- REAL\n\
                   CREATE TABLE u (seq INTEGER PRIMARY KEY, real_value REAL)";
        assert_eq!(
            postgres_ddl(sql),
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT NOT NULL, \
             x DOUBLE PRECISION, b BYTEA, note TEXT DEFAULT 'INTEGER REAL', interval_s BIGINT); -- REAL\n\
             CREATE TABLE u (seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, real_value DOUBLE PRECISION)"
        );
    }

    #[test]
    fn every_migration_reaches_postgres_without_sqlite_only_statements() {
        for m in super::super::MIGRATIONS
            .iter()
            .filter(|m| m.postgres.is_none())
        {
            let pg = Dialect::Postgres.migration(m);
            let code: String = pg
                .lines()
                .map(|l| l.split("--").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for bad in SQLITE_ONLY {
                assert!(
                    !code.contains(bad),
                    "migration {} ({}) sends `{bad}` to PostgreSQL: write it portably, or add \
                     migrations/postgres/{:04}_{}.sql and list it in src/store/mod.rs",
                    m.version,
                    m.name,
                    m.version,
                    m.name
                );
            }
        }
    }

    /// `table -> columns` of every `CREATE TABLE` in `sql` (first word of each line).
    fn tables(sql: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out = std::collections::BTreeMap::new();
        let mut current: Option<String> = None;
        for line in sql
            .lines()
            .map(|l| l.split("--").next().unwrap_or("").trim())
        {
            if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
                let name = rest.split_whitespace().next().unwrap_or("").to_string();
                out.insert(name.clone(), Vec::new());
                current = Some(name);
            } else if line.starts_with(')') {
                current = None;
            } else if let Some(t) = &current {
                let word = line.split_whitespace().next().unwrap_or("");
                if !word.is_empty() && word != "PRIMARY" {
                    out.get_mut(t).unwrap().push(word.to_string());
                }
            }
        }
        out
    }

    #[test]
    fn postgres_twins_create_the_same_tables_and_columns() {
        for m in super::super::MIGRATIONS
            .iter()
            .filter(|m| m.postgres.is_some())
        {
            let pg = Dialect::Postgres.migration(m);
            assert_eq!(tables(m.sql), tables(&pg), "migration {}", m.version);
            assert!(!tables(m.sql).is_empty() || m.sql.contains("DROP TABLE"));
        }
    }

    #[test]
    fn urls_select_the_dialect() {
        assert_eq!(
            Dialect::of_url("sqlite:///x/kura.db").unwrap(),
            Dialect::Sqlite
        );
        assert_eq!(
            Dialect::of_url("postgres://kura@localhost/kura").unwrap(),
            Dialect::Postgres
        );
        assert_eq!(
            Dialect::of_url("postgresql:///kura?host=/run/postgresql").unwrap(),
            Dialect::Postgres
        );
        let e = Dialect::of_url("mysql://x").unwrap_err().to_string();
        assert!(e.contains("postgres://"), "{e}");
    }
}
