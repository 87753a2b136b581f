//! HTTP, where a request came from ([`origin_of`]): every authenticated request carries it
//! (`AuthUser::origin`) to the enforcement point for the place of use (seed 002 要綱
//! 第3章6, `policy::place`).
//!
//! Guarantees: the address is the TCP peer the listener recorded (plain HTTP through
//! axum's `ConnectInfo`, TLS through the same extension set by `tls.rs`); an
//! `X-Forwarded-For` header counts only when that peer is one of the configured trusted
//! proxies (`trusted_proxies`), and a header that is not plain text makes the origin
//! unknown. A request without a recorded peer (the router called in-process) has an
//! unknown origin, which restricted approvals refuse.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;

use crate::config::HttpSettings;
use crate::policy::place::Origin;

/// The caller's address as the place-of-use check sees it.
pub fn origin_of(parts: &Parts, settings: &HttpSettings) -> Origin {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        // Not text: what the proxy forwarded cannot be read, so it is not believed
        // either way (an unparseable hop makes a trusted proxy's origin unknown).
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .collect();
    Origin::from_peer(peer, &forwarded, &settings.trusted_proxies)
}
