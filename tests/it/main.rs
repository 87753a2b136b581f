//! The one integration-test binary (linking DataFusion is slow, so every area adds a
//! module here instead of a new top-level test file).

mod api;
mod e2e;
mod extracts;
mod foundation;
mod support;
