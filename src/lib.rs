//! # kura (蔵) — a research data access enclave for Japanese patient registries
//!
//! Approved researchers send SQL; the registry data never leaves. What leaves is an
//! answer that cannot identify a patient, and a tamper-evident record of who asked what.
//!
//! The crate follows the request pipeline, one module per stage, in this order:
//!
//! ```text
//!  http (axum; tls) ─► auth ─► policy (casbin; resolve) ─► query::Gateway
//!                                                            │
//!     ┌──────────────────────────────────────────────────────┘
//!     ▼
//!  sql::guard ─► sql::rewrite (suppression | DP bounding) ─► engine (DataFusion, limits)
//!     ─► privacy::disclosure (k, dominance, padding …) | privacy::dp (OpenDP noise, ε ledger)
//!     ─► audit + store (history, ε settlement and hash-chained event in one transaction)
//!     ─► response (no audit, no answer)
//! ```
//!
//! [`query`] owns a query from "authorised" to "released" and is the one entry point
//! HTTP and Flight SQL ([`flight`]) call. Data enters through [`ingest`] (pseudonymisation,
//! consent filter) and is described by the [`catalog`]; each approval gets its own
//! extract ([`sql::extract`]). Control-plane state lives in [`store`]; the approval
//! workflow in [`policy::workflow`]; operator commands, `kura demo` and the benchmarks in
//! [`cli`]; layered configuration in [`config`].

// The request pipeline, in order.
pub mod http;

// Flight SQL (issue 15): a second door into the same pipeline, beside `http`.
pub mod flight;

pub mod auth;

pub mod policy;

pub mod query;

pub mod sql;

pub mod privacy;

pub mod engine;

pub mod audit;

pub mod store;

// The output airlock (issue 13 §1): released answers leave the enclave only as reviewed,
// approved release requests.
pub mod airlock;

// Around the pipeline: data in, its description, reports, the console, configuration.
pub mod catalog;
pub mod console;
pub mod ingest;
pub mod notebook;
pub mod report;

pub mod config;
pub mod errors;
// production (issue 14): durable writes, metrics, resource limits
pub mod durable;
pub mod metrics;
pub mod telemetry;

// Operator commands, `kura demo` and the benchmarks.
pub mod cli;
