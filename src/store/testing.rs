//! Store, test support (hidden from the documentation): the store every test opens, on
//! the database the test run selects, plus the raw access that tamper and fault tests
//! need in each dialect.
//!
//! `KURA_TEST_STORE=postgres` runs the store and API suites on PostgreSQL: each test gets
//! its own fresh database on the cluster at `KURA_TEST_PG_URL` (`tests/run.sh` starts
//! one); without it they run on a SQLite file in the test's directory. A PostgreSQL run
//! without a cluster URL fails, never falls back.

use std::path::Path;

use sqlx::{AnyConnection, Connection};

use super::{Dialect, Opening, Store, sqlite_url};
use crate::audit::AuditKey;

/// Selects the test store's database: `postgres` or `sqlite` (default).
pub const STORE_VAR: &str = "KURA_TEST_STORE";
/// URL of the PostgreSQL cluster test databases are created on (its database is the
/// maintenance database, e.g. `postgres`).
pub const PG_URL_VAR: &str = "KURA_TEST_PG_URL";
/// File in a test's directory that remembers its PostgreSQL database across reopenings.
const URL_FILE: &str = "store.url";

/// The database this test run uses.
pub fn dialect() -> Dialect {
    match std::env::var(STORE_VAR).as_deref() {
        Ok("postgres") => Dialect::Postgres,
        _ => Dialect::Sqlite,
    }
}

/// The cluster URL of a PostgreSQL run; panics (failing the test) when unset.
pub fn pg_url() -> String {
    std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{STORE_VAR}=postgres needs {PG_URL_VAR} (tests/run.sh starts a cluster and sets it)"
        )
    })
}

/// `url` with its database replaced by `database` (the query string is kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A fresh, empty database on the test cluster; returns its URL.
pub async fn create_pg_database() -> String {
    let cluster = pg_url();
    sqlx::any::install_default_drivers();
    let mut admin = AnyConnection::connect(&cluster)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster {cluster}: {e}"));
    let name = format!(
        "kura_t_{}",
        crate::auth::random_hex(8).expect("system random generator")
    );
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    admin.close().await.ok();
    with_database(&cluster, &name)
}

/// The store URL of the test whose directory is `dir`: `dir/kura.db` on SQLite; on
/// PostgreSQL a database created on first use and remembered in `dir/store.url`, so that
/// reopening the same directory (a restart) reopens the same database.
pub async fn url(dir: &Path) -> String {
    match dialect() {
        Dialect::Sqlite => sqlite_url(&dir.join("kura.db")),
        Dialect::Postgres => {
            let file = dir.join(URL_FILE);
            if let Ok(url) = std::fs::read_to_string(&file) {
                return url;
            }
            let url = create_pg_database().await;
            std::fs::write(&file, &url).expect("write store.url");
            url
        }
    }
}

/// The PostgreSQL database a test directory was given, if any (for the CLI's
/// `--store-url`; `None` on SQLite runs, where `--data-dir` finds `kura.db`).
pub fn remembered_url(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(URL_FILE)).ok()
}

/// Open (as the server does) the test store of `dir`.
pub async fn open(dir: &Path, key: AuditKey) -> Store {
    let url = url(dir).await;
    Store::connect(&url, key, Opening::Server)
        .await
        .unwrap_or_else(|e| panic!("cannot open the test store {url}: {e}"))
}

/// A raw connection to the test store of `dir`, for tamper and fault tests.
pub async fn raw(dir: &Path) -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(&url(dir).await)
        .await
        .expect("raw connection to the test store")
}

/// Run `statements` (one per dialect) on `conn`.
async fn run(conn: &mut AnyConnection, sqlite: &str, postgres: &str) {
    let sql = match dialect() {
        Dialect::Sqlite => sqlite,
        Dialect::Postgres => postgres,
    };
    sqlx::raw_sql(sql).execute(conn).await.unwrap();
}

/// Make every insert into `table` fail, as a full disk or a broken database would,
/// until [`allow_inserts`].
pub async fn refuse_inserts(conn: &mut AnyConnection, table: &str) {
    let sqlite = format!(
        "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
    );
    let postgres = format!(
        "CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;
         CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_{table}();"
    );
    run(conn, &sqlite, &postgres).await
}

/// Undo [`refuse_inserts`].
pub async fn allow_inserts(conn: &mut AnyConnection, table: &str) {
    let sqlite = format!("DROP TRIGGER refuse_{table}");
    let postgres =
        format!("DROP TRIGGER refuse_{table} ON {table}; DROP FUNCTION refuse_{table}();");
    run(conn, &sqlite, &postgres).await
}

/// Make every audit write fail (see [`refuse_inserts`]).
pub async fn break_audit_writes(conn: &mut AnyConnection) {
    refuse_inserts(conn, "audit_log").await
}

/// Undo [`break_audit_writes`].
pub async fn heal_audit_writes(conn: &mut AnyConnection) {
    allow_inserts(conn, "audit_log").await
}

/// Every stored event of `action`, oldest first, read straight from `audit_log`.
pub async fn raw_events(conn: &mut AnyConnection, action: &str) -> Vec<serde_json::Value> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT event FROM audit_log WHERE action = $1 ORDER BY seq")
            .bind(action)
            .fetch_all(conn)
            .await
            .unwrap();
    rows.iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// Drop the append-only triggers of `audit_log`, as an insider with database access
/// could, so that a test can edit or delete rows.
pub async fn allow_audit_tampering(conn: &mut AnyConnection) {
    run(
        conn,
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;",
        "DROP TRIGGER audit_log_no_update ON audit_log; DROP TRIGGER audit_log_no_delete ON audit_log;",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://kura@127.0.0.1:5432/postgres", "t1"),
            "postgres://kura@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://kura@localhost?host=/tmp/pg", "t1"),
            "postgres://kura@localhost/t1?host=/tmp/pg"
        );
    }

    /// CI must exercise PostgreSQL: a CI run without a cluster fails here instead of
    /// silently testing SQLite alone.
    #[test]
    fn ci_runs_have_a_postgres_cluster() {
        if std::env::var("CI").as_deref() == Ok("true") {
            assert!(
                std::env::var(PG_URL_VAR).is_ok(),
                "CI=true but {PG_URL_VAR} is unset: tests/run.sh must start the PostgreSQL cluster"
            );
        }
    }
}
