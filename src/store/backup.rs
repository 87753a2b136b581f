//! Store, backup: every table exported as portable JSON lines in one consistent snapshot,
//! and imported into an empty store of either dialect (so a backup of the embedded SQLite
//! store also moves an installation to PostgreSQL).
//!
//! Guarantees: the export reads all tables in one transaction (a snapshot: the audit
//! chain, the ε ledger and the rows they describe agree); values keep their types
//! (integer, real, text, bytes as hex, null); the import runs in one transaction into a
//! store that holds no audit entry yet — it refuses a non-empty one instead of mixing two
//! histories — and advances PostgreSQL's identity sequences past the imported ids.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Column, Row, TypeInfo, ValueRef};

use super::{Dialect, Result, Store, StoreError};

/// Tables whose rows others refer to: imported first.
const FIRST: &[&str] = &["users", "applications"];
/// Tables the store manages itself and never imports.
const SKIP: &[&str] = &["schema_migrations"];

/// One table's rows.
pub type TableRows = Vec<Map<String, Value>>;

fn value_of(row: &AnyRow, i: usize) -> Result<Value> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = raw.type_info().name().to_ascii_uppercase();
    Ok(match kind.as_str() {
        "BIGINT" | "INTEGER" | "SMALLINT" => Value::from(row.try_get::<i64, _>(i)?),
        "DOUBLE" | "REAL" => Value::from(row.try_get::<f64, _>(i)?),
        "BLOB" => {
            serde_json::json!({"hex": hex::encode(row.try_get::<Vec<u8>, _>(i)?)})
        }
        _ => Value::from(row.try_get::<String, _>(i)?),
    })
}

async fn table_names(conn: &mut AnyConnection, dialect: Dialect) -> Result<Vec<String>> {
    let sql = match dialect {
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        Dialect::Postgres => {
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        }
    };
    let names: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut *conn).await?;
    let mut ordered: Vec<String> = FIRST.iter().map(|s| s.to_string()).collect();
    ordered.retain(|t| names.contains(t));
    for n in names {
        if !ordered.contains(&n) && !SKIP.contains(&n.as_str()) {
            ordered.push(n);
        }
    }
    Ok(ordered)
}

/// Only plain identifiers reach SQL text (table and column names come from the
/// database's own catalogue, but are checked all the same).
fn ident(name: &str) -> Result<&str> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name)
    } else {
        Err(StoreError::Config(format!(
            "unexpected table or column name `{name}`"
        )))
    }
}

impl Store {
    /// Every table's rows, in one snapshot.
    pub async fn export_tables(&self) -> Result<BTreeMap<String, TableRows>> {
        let begin = match self.dialect {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        let mut tx = self.pool.begin_with(begin).await?;
        let mut out = BTreeMap::new();
        for table in table_names(&mut tx, self.dialect).await? {
            let sql = format!("SELECT * FROM {}", ident(&table)?);
            let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
            let mut list = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut obj = Map::new();
                for (i, col) in row.columns().iter().enumerate() {
                    obj.insert(col.name().to_string(), value_of(row, i)?);
                }
                list.push(obj);
            }
            out.insert(table, list);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Import exported tables into this store, which must hold no audit entry yet.
    pub async fn import_tables(&self, tables: &BTreeMap<String, TableRows>) -> Result<()> {
        let dialect = self.dialect;
        self.transaction(async |tx| {
            let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
                .fetch_one(&mut *tx)
                .await?;
            if existing > 0 {
                return Err(StoreError::Conflict(
                    "the target store already holds an audit log; restore into an empty store / 復元先のストアは空である必要があります".into(),
                ));
            }
            for table in table_names(tx, dialect).await? {
                for row in tables.get(&table).into_iter().flatten() {
                    insert_row(tx, &table, row).await?;
                }
                if dialect == Dialect::Postgres {
                    advance_identity(tx, &table).await?;
                }
            }
            Ok(())
        })
        .await
    }
}

async fn insert_row(conn: &mut AnyConnection, table: &str, row: &Map<String, Value>) -> Result<()> {
    let columns: Vec<&str> = row.keys().map(|c| ident(c)).collect::<Result<_>>()?;
    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        ident(table)?,
        columns.join(", "),
        marks.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for v in row.values() {
        q = match v {
            Value::Null => q.bind(None::<String>),
            Value::Number(n) if n.is_i64() => q.bind(n.as_i64()),
            Value::Number(n) => q.bind(n.as_f64()),
            Value::String(s) => q.bind(s.clone()),
            Value::Object(o) if o.contains_key("hex") => {
                let bytes = hex::decode(o["hex"].as_str().unwrap_or(""))
                    .map_err(|e| StoreError::Config(format!("bad bytes in {table}: {e}")))?;
                q.bind(bytes)
            }
            other => q.bind(other.to_string()),
        };
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// After explicit ids were imported, move the table's identity sequence past them.
async fn advance_identity(conn: &mut AnyConnection, table: &str) -> Result<()> {
    // Only identity columns have a sequence; asking for another column's would abort
    // the transaction.
    let seq: Option<String> = sqlx::query_scalar(
        "SELECT pg_get_serial_sequence(quote_ident(table_name::text), 'id')::text
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'id'
           AND is_identity = 'YES'",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(seq) = seq {
        let sql = format!(
            "SELECT setval($1, (SELECT COALESCE(MAX(id), 0) + 1 FROM {}), false)",
            ident(table)?
        );
        sqlx::query(&sql).bind(seq).execute(&mut *conn).await?;
    }
    Ok(())
}
