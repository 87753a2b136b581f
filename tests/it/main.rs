//! The one integration-test binary (linking DataFusion once). Each area adds a module.

mod api;
mod e2e;
mod foundation;
