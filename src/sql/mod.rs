//! SQL stage: the guard (read-only statements, allow-listed functions, error-proof
//! expressions), the scope (per-application extracts), and the privacy rewrite of the
//! logical plan.

pub mod depth;
pub mod extract;
pub mod guard;
pub mod rewrite;
pub mod scope;
pub mod size;
