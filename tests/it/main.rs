//! The one integration-test binary (linking DataFusion once). Each area adds a module.

mod foundation;
