//! Flight SQL stage, the service: every Flight SQL call kura answers, each one thin —
//! authenticate (`auth.rs`), read the call's options (`options.rs`), call the stage that
//! owns the work, map its answer or refusal (`status.rs`). Like `http/query.rs`, it decides
//! nothing about a query: statements and prepared statements go through
//! [`crate::query::Gateway::run`] (policy, guard, rewrite, limits, disclosure, ledger,
//! audit — no audit, no answer), catalogue calls through the application's scope
//! (`catalog.rs`).
//!
//! Guarantees: no call but the handshake is served without a live session; updates, bulk
//! ingest, Substrait plans and transactions are refused with `statement_not_allowed` and
//! the attempt is audited (`flight.refused`); a statement is run once, in `GetFlightInfo`,
//! and its released answer waits for the caller's own `DoGet` (`results.rs`).

use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    ActionCreatePreparedSubstraitPlanRequest, ActionEndSavepointRequest,
    ActionEndTransactionRequest, Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use serde_json::json;
use std::pin::Pin;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{self, Caller};
use super::prepared::{self, Statements};
use super::results::Results;
use super::{batch, catalog, options, status};
use crate::audit::AuditEvent;
use crate::http::AppState;
use crate::query::{QueryError, new_ref};

type DoGetStream = <KuraFlightSql as FlightService>::DoGetStream;

/// kura's Flight SQL service.
#[derive(Clone)]
pub struct KuraFlightSql {
    st: AppState,
    results: Arc<Results>,
    statements: Arc<Statements>,
    sql_info: Arc<SqlInfoData>,
}

impl KuraFlightSql {
    pub fn new(st: AppState) -> Self {
        Self {
            st,
            results: Arc::default(),
            statements: Arc::default(),
            sql_info: Arc::new(catalog::sql_info()),
        }
    }

    /// Run `sql` for `caller` through the gateway under the call's options, keep the
    /// released answer for `DoGet`, and describe it (disclosure record as app metadata).
    async fn run(
        &self,
        caller: &Caller,
        md: &MetadataMap,
        sql: String,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut request = options::request(md, sql)?;
        request.origin = caller.origin;
        let answer = self
            .st
            .gateway()
            .run(&caller.user, &request, self.st.today())
            .await
            .map_err(status::refused)?;
        let batch =
            batch::to_batch(&answer.query_id, &answer.result).map_err(|e| status::internal(&e))?;
        let meta = batch::app_metadata(&answer.query_id, &answer.result);
        let handle = self
            .results
            .put(&caller.user.username, batch.clone())
            .map_err(|e| status::internal(&e))?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.into_bytes().into(),
        };
        let endpoint = FlightEndpoint::new()
            .with_ticket(Ticket::new(ticket.as_any().encode_to_vec()))
            .with_app_metadata(meta.clone());
        let info = FlightInfo::new()
            .try_with_schema(&batch.schema())
            .map_err(|e| status::internal(&e))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_total_records(batch.num_rows() as i64)
            .with_total_bytes(-1)
            .with_ordered(true)
            .with_app_metadata(meta);
        Ok(Response::new(info))
    }

    /// Refuse a write, bulk ingest, Substrait plan or transaction call, audited.
    async fn not_allowed<T>(&self, req: &Request<T>, what: Refused) -> Status {
        let caller = match auth::caller(&self.st, req).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let application = options::application(req.metadata()).ok();
        let reference = new_ref();
        let ev = AuditEvent::denied(
            &caller.user.username,
            "flight.refused",
            application.as_deref(),
            "statement_not_allowed",
            json!({"command": what.command()}),
        )
        .with_reference(&reference);
        if let Err(e) = self.st.store.record(&ev).await {
            return status::store(e);
        }
        status::status(400, "statement_not_allowed", what.message(), &reference)
    }

    /// The FlightInfo of a catalogue call: its schema, and a ticket that repeats it.
    fn metadata_info(
        batch: &RecordBatch,
        command: Any,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(command.encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&batch.schema())
            .map_err(|e| status::internal(&e))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_total_records(batch.num_rows() as i64)
            .with_total_bytes(-1);
        Ok(Response::new(info))
    }

    /// The tables of the call's application, authorised.
    async fn scope<T>(&self, req: &Request<T>) -> Result<Vec<&crate::catalog::Table>, Status> {
        let caller = auth::caller(&self.st, req).await?;
        let application = options::application(req.metadata())?;
        catalog::scope_tables(&self.st, &caller, &application).await
    }
}

/// The calls refused on a read-only enclave.
#[derive(Debug, Clone, Copy)]
enum Refused {
    Update,
    Ingest,
    Substrait,
    Transaction,
}

impl Refused {
    fn command(self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Ingest => "bulk_ingest",
            Self::Substrait => "substrait",
            Self::Transaction => "transaction",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::Update => {
                "kura is read-only: INSERT, UPDATE, DELETE and other changes are refused over every protocol; send a SELECT that aggregates over patients. / kura は読み取り専用です。INSERT・UPDATE・DELETE などの変更はできません。患者単位で集計する SELECT を送ってください。"
            }
            Self::Ingest => {
                "Bulk ingest is not available: nothing is loaded into kura through a query connection (registry data is ingested by the data custodian). / 一括取込はできません。データの取込はデータ管理者が行います。"
            }
            Self::Substrait => {
                "Substrait plans are not accepted: send SQL text, which kura checks before it runs. / Substrait プランは受け付けません。SQL を送ってください。"
            }
            Self::Transaction => {
                "kura has no transactions: each statement is a read-only query of its own; connect with autocommit on. / トランザクションはありません。自動コミット（autocommit）で接続してください。"
            }
        }
    }
}

/// A data-plane refusal that never reached the gateway (binding a prepared statement).
fn query_error(e: QueryError) -> Status {
    status::status(e.http_status(), e.code(), &e.public_message(), &new_ref())
}

/// A record batch as the DoGet stream.
fn stream(batch: RecordBatch) -> Response<DoGetStream> {
    let schema = batch.schema();
    let flights = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Response::new(Box::pin(flights))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        status::invalid_request(&format!("The {what} is not valid. / {what} が不正です。"))
    })
}

fn not_found(what: &str) -> Status {
    status::status(
        404,
        "not_found",
        &format!(
            "No {what} with this handle is open for you: it expired, was closed, or belongs to another session's user; run the statement again. / 該当する {what} はありません。もう一度実行してください。"
        ),
        &new_ref(),
    )
}

/// Parameters of a prepared statement, as sent with DoPut (one row; at most a few
/// messages are read).
async fn parameters(stream: PeekableFlightDataStream) -> Result<Vec<RecordBatch>, Status> {
    let data = stream.take(16).map_err(FlightError::from);
    let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
    let mut out = Vec::new();
    let mut rows = 0usize;
    while let Some(b) = batches.next().await {
        let b = b.map_err(Status::from)?;
        rows += b.num_rows();
        out.push(b);
        if rows > 1 {
            break;
        }
    }
    Ok(out)
}

#[tonic::async_trait]
impl FlightSqlService for KuraFlightSql {
    type FlightService = KuraFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        auth::handshake(&self.st, request).await
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if query.transaction_id.is_some() {
            return Err(self.not_allowed(&request, Refused::Transaction).await);
        }
        let caller = auth::caller(&self.st, &request).await?;
        let descriptor = request.get_ref().clone();
        self.run(&caller, request.metadata(), query.query, descriptor)
            .await
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(self.not_allowed(&request, Refused::Substrait).await)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = auth::caller(&self.st, &request).await?;
        let handle = utf8(
            &query.prepared_statement_handle,
            "prepared statement handle",
        )?;
        let p = self
            .statements
            .get(&caller.user.username, &handle)
            .ok_or_else(|| not_found("prepared statement"))?;
        let sql = prepared::bind(&p.sql, &p.params).map_err(query_error)?;
        let descriptor = request.get_ref().clone();
        self.run(&caller, request.metadata(), sql, descriptor).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        auth::caller(&self.st, &request).await?;
        let batch = catalog::catalogs(query)?;
        Self::metadata_info(&batch, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        auth::caller(&self.st, &request).await?;
        let batch = catalog::schemas(query.clone())?;
        Self::metadata_info(&batch, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope(&request).await?;
        let batch = catalog::tables(query.clone(), &scope)?;
        Self::metadata_info(&batch, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        auth::caller(&self.st, &request).await?;
        let batch = catalog::table_types(query)?;
        Self::metadata_info(&batch, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        auth::caller(&self.st, &request).await?;
        let batch = query
            .clone()
            .into_builder(&self.sql_info)
            .build()
            .map_err(|e| status::internal(&e))?;
        Self::metadata_info(&batch, query.as_any(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = auth::caller(&self.st, &request).await?;
        let handle = utf8(&ticket.statement_handle, "ticket")?;
        let batch = self
            .results
            .get(&caller.user.username, &handle)
            .ok_or_else(|| not_found("result"))?;
        Ok(stream(batch))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        auth::caller(&self.st, &request).await?;
        Ok(stream(catalog::catalogs(query)?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        auth::caller(&self.st, &request).await?;
        Ok(stream(catalog::schemas(query)?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let scope = self.scope(&request).await?;
        Ok(stream(catalog::tables(query, &scope)?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        auth::caller(&self.st, &request).await?;
        Ok(stream(catalog::table_types(query)?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        auth::caller(&self.st, &request).await?;
        let batch = query
            .into_builder(&self.sql_info)
            .build()
            .map_err(|e| status::internal(&e))?;
        Ok(stream(batch))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.not_allowed(&request, Refused::Update).await)
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.not_allowed(&request, Refused::Ingest).await)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = auth::caller(&self.st, &request).await?;
        let handle = utf8(
            &query.prepared_statement_handle,
            "prepared statement handle",
        )?;
        let batches = parameters(request.into_inner()).await?;
        let params = prepared::parameter_row(&batches).map_err(query_error)?;
        if !self.statements.bind(&caller.user.username, &handle, params) {
            return Err(not_found("prepared statement"));
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into_bytes().into()),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.not_allowed(&request, Refused::Update).await)
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.not_allowed(&request, Refused::Substrait).await)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        if query.transaction_id.is_some() {
            return Err(self.not_allowed(&request, Refused::Transaction).await);
        }
        let caller = auth::caller(&self.st, &request).await?;
        let handle = self
            .statements
            .create(&caller.user.username, query.query)
            .map_err(|e| status::internal(&e))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: Default::default(),
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let caller = auth::caller(&self.st, &request).await?;
        let handle = utf8(
            &query.prepared_statement_handle,
            "prepared statement handle",
        )?;
        self.statements.close(&caller.user.username, &handle);
        Ok(())
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Err(self.not_allowed(&request, Refused::Substrait).await)
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(self.not_allowed(&request, Refused::Transaction).await)
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        Err(self.not_allowed(&request, Refused::Transaction).await)
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        Err(self.not_allowed(&request, Refused::Transaction).await)
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        Err(self.not_allowed(&request, Refused::Transaction).await)
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
