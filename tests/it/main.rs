//! The one integration-test binary (linking DataFusion is slow, so every area adds a
//! module here instead of a new top-level test file).

// oversight (issue 13 §2 §4)
mod alerts;
mod api;
mod attacks;
mod bounded;
mod differencing;
mod dp_api;
mod dp_engine;
mod e2e;
mod equivalence;
mod extracts;
mod foundation;
mod functions;
mod ledger_e2e;
mod ordering;
mod qc_fixture;
// seeds (issue 16)
mod seeds_data;
mod seeds_facility;
mod seeds_place;
mod seeds_register;
mod slt;
mod support;
mod tls;
mod usage_report;
