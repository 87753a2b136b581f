//! # kura (蔵) — a research data access enclave for Japanese patient registries
//!
//! Approved researchers send SQL; the registry data never leaves. What leaves is an
//! answer that cannot identify a patient, and a tamper-evident record of who asked what.
//!
//! The crate follows the request pipeline, one module per stage:
//!
//! ```text
//!  HTTP / console ─► auth ─► policy (casbin) ─► sql::guard ─► scope (per-application extract)
//!     │                                                            │
//!     │            ┌───────────────────────────────────────────────┘
//!     │            ▼
//!     │     sql::privacy rewrite ─► engine (DataFusion, limits) ─► privacy (disclosure check)
//!     │       (DP: bounded plan)        (engine::dp: zero-fill)       (DP: OpenDP noise,
//!     │                                                             release threshold)
//!     │                                                            │
//!     └──────────────◄── response ◄── audit (hash chain; no audit, no answer) ◄┘
//! ```
//!
//! Data enters through [`ingest`] (pseudonymisation, consent filter) and is described by
//! the [`catalog`]. Control-plane state lives in [`store`]; the approval workflow and its
//! casbin enforcement point in [`policy`]; operator commands in [`admin`] and [`demo`];
//! layered configuration in [`config`].

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod console;
pub mod engine;
pub mod http;
pub mod ingest;
pub mod policy;
pub mod privacy;
pub mod query;
pub mod report;
pub mod sql;
pub mod store;
