//! Flight SQL stage, catalogue calls (`GetCatalogs`, `GetDbSchemas`, `GetTables`,
//! `GetTableTypes`, `GetSqlInfo`) so that DBeaver and ADBC list tables and columns.
//!
//! What a caller sees is what `GET /api/v1/catalog` shows for the same application: the
//! tables of its scope's datasets only, each with the catalogue's Arrow schema (the types a
//! query reads; the ja/en description as the Flight SQL column remark), under the names a
//! query uses (`datafusion.public.<table>`, the extract session's default catalogue and
//! schema). The application comes from the call's `kura.application` header and is
//! resolved and authorised like a query (`Action::Catalog`); a refusal is audited as
//! `catalog.read` with the same code as over HTTP.
//!
//! Guarantees: no table outside the scope appears, in any call; the server describes
//! itself as read-only with no transactions.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, SqlInfo,
    SqlSupportedTransaction,
};
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde_json::json;
use tonic::Status;

use super::auth::Caller;
use super::status;
use crate::audit::AuditEvent;
use crate::catalog::Table;
use crate::http::AppState;
use crate::policy::Action;

/// The catalogue name queries see (DataFusion's default).
pub const CATALOG: &str = "datafusion";
/// The schema name queries see (DataFusion's default).
pub const SCHEMA: &str = "public";
/// The one table type.
pub const TABLE_TYPE: &str = "TABLE";

/// The catalogue tables of `application`'s scope, after authorising `user`.
pub async fn scope_tables<'a>(
    st: &'a AppState,
    caller: &Caller,
    application: &str,
) -> Result<Vec<&'a Table>, Status> {
    let (user, origin) = (&caller.user, caller.origin);
    let resolved = st
        .policy
        .resolve(
            &st.store,
            user,
            application,
            Action::Catalog,
            st.today(),
            origin,
        )
        .await
        .map_err(status::store)?;
    let grant = match resolved {
        Ok(g) => g,
        Err(d) => {
            let reference = crate::query::new_ref();
            let ev = AuditEvent::denied(
                &user.username,
                "catalog.read",
                Some(application),
                d.code,
                json!({"via": "flight"}),
            )
            .with_reference(&reference);
            st.store.record(&ev).await.map_err(status::store)?;
            return Err(status::status(403, d.code, &d.message, &reference));
        }
    };
    let datasets = grant.scope.datasets.clone();
    Ok(st
        .catalog
        .tables
        .iter()
        .filter(|t| t.datasets.iter().any(|d| datasets.contains(d)))
        .collect())
}

/// A table's schema with each column's description as its Flight SQL remark.
fn described(t: &Table) -> Schema {
    let fields: Vec<Field> = t
        .arrow_schema()
        .fields()
        .iter()
        .zip(&t.columns)
        .map(|(f, c)| {
            let meta = HashMap::from([
                (
                    "ARROW:FLIGHT:SQL:REMARKS".to_string(),
                    format!("{} / {}", c.description_en, c.description_ja),
                ),
                ("ARROW:FLIGHT:SQL:TABLE_NAME".to_string(), t.name.clone()),
                ("ARROW:FLIGHT:SQL:IS_READ_ONLY".to_string(), "1".to_string()),
            ]);
            f.as_ref().clone().with_metadata(meta)
        })
        .collect();
    Schema::new(fields)
}

fn arrow(e: impl std::fmt::Display) -> Status {
    status::internal(&e)
}

/// `GetCatalogs`: the one catalogue.
pub fn catalogs(q: CommandGetCatalogs) -> Result<RecordBatch, Status> {
    let mut b = q.into_builder();
    b.append(CATALOG);
    b.build().map_err(arrow)
}

/// `GetDbSchemas`: the one schema.
pub fn schemas(q: CommandGetDbSchemas) -> Result<RecordBatch, Status> {
    let mut b = q.into_builder();
    b.append(CATALOG, SCHEMA);
    b.build().map_err(arrow)
}

/// `GetTables` over the scope's tables (the builder applies the client's filters).
pub fn tables(q: CommandGetTables, scope: &[&Table]) -> Result<RecordBatch, Status> {
    let mut b = q.into_builder();
    for t in scope {
        b.append(CATALOG, SCHEMA, &t.name, TABLE_TYPE, &described(t))
            .map_err(arrow)?;
    }
    b.build().map_err(arrow)
}

/// `GetTableTypes`: the one table type.
pub fn table_types(_q: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let schema = Schema::new(vec![Field::new("table_type", DataType::Utf8, false)]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(StringArray::from(vec![TABLE_TYPE]))],
    )
    .map_err(arrow)
}

/// What `GetSqlInfo` says about the server.
pub fn sql_info() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "kura");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build().expect("static SqlInfo values build")
}
