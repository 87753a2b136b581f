//! The one test harness every area shares, by purpose: `source` writes a deterministic
//! source dataset, `fixtures` names the accounts and applications the API tests rely
//! on, `plane` is the only test double of the data plane, `http` the request helpers
//! (in-process router and real HTTP client alike), `outcome` reads released results,
//! and `server` starts the real binary.
//! Keeping them in one place means a fixture means the same thing in every test.

// Each test module uses a different part of the harness.
#![allow(dead_code)]

pub mod fixtures;
pub mod flight;
pub mod http;
pub mod outcome;
pub mod plane;
pub mod python;
pub mod server;
mod source;

pub use source::*;
