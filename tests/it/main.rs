//! The one integration-test binary (linking DataFusion is slow; one binary links once).

mod api;
