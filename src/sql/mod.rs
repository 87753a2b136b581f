//! SQL stage: the guard (read-only statements, allow-listed functions, error-proof
//! expressions), the scope (per-application extracts), and the privacy rewrite of the
//! logical plan.

pub mod case_nullability;
pub mod decimal;
pub mod depth;
pub mod extract;
pub mod fallible;
pub mod guard;
pub mod output_cap;
pub mod rewrite;
pub mod safe_comparison;
pub mod safe_function;
pub mod safe_temporal;
pub mod scope;
pub mod size;
pub mod sql_error;
