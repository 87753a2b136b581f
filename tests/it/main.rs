//! The single integration-test binary (linking DataFusion is slow; one binary only).

mod attacks;
mod equivalence;
mod qc_fixture;
mod slt;
