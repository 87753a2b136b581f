//! Benchmarks (`kura bench …`): ingest against a plain Parquet write, and the query
//! paths against raw DataFusion, measured in the same run.

pub mod ingest;
pub mod ledger;
pub mod query;
