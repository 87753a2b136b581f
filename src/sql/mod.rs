//! SQL stage: the guard (read-only statements, allow-listed functions, error-proof
//! expressions), the scope (per-application extracts), and the privacy rewrite of the
//! logical plan.

pub mod extract;
pub mod extract_cli;
pub mod guard;
pub mod privacy;
pub mod scope;
