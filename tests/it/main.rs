//! The one integration-test binary (linking DataFusion is slow, so every area adds a
//! module here instead of a new top-level test file).

// the output airlock (issue 13 §1)
mod airlock;
mod airlock_demo;
// console (issue 17): operator endpoints, audit export, notebook outputs
mod admin_api;
// oversight (issue 13 §2 §4)
mod alerts;
// annual reports (issue 13 §3)
mod annual;
mod api;
mod attacks;
// clients and scale (issue 15 §3): execution on a Ballista cluster
#[cfg(feature = "ballista")]
mod ballista;
mod bounded;
mod differencing;
mod dp_api;
mod dp_engine;
mod e2e;
mod equivalence;
mod extracts;
// clients and scale (issue 15): Flight SQL
mod flight;
mod flight_demo;
// clients and scale (issue 15 §2): notebooks as Jupyter files
mod foundation;
mod functions;
mod ipynb;
mod ledger_e2e;
mod ledger_users;
mod ordering;
// production (issue 14)
mod production;
mod production_faults;
mod production_fuzz;
mod qc_fixture;
// seeds (issue 16)
mod seeds_data;
mod seeds_facility;
mod seeds_place;
mod seeds_register;
mod slt;
mod support;
mod telemetry;
mod tls;
mod usage_report;
