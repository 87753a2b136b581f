//! Authorization stage, place of use (seed 002 要綱 第3章6: 「個人票等は、承認を受けた者が
//! 所属する研究施設の外に持ち出してはならない」; form 1 annex item 6 使用場所): an approval
//! names the networks of its research facility, and every request of that application is
//! checked against the address it came from.
//!
//! Guarantees:
//! - The check runs in the one enforcement point ([`super::Policy::authorize`], through
//!   casbin's `placeOfUse` function and again in the diagnosis), so every protocol that
//!   resolves an application — HTTP today, Flight SQL or any later one — is held to it;
//!   a protocol that does not know its caller's address passes [`Origin::UNKNOWN`], which
//!   no restricted approval admits (fail closed).
//! - The address is the connection's peer. A forwarded address (`X-Forwarded-For`) is
//!   believed only when the peer is one of the configured trusted proxies, and then only
//!   up to the first hop that is not itself trusted (`Origin::from_peer`); a malformed
//!   header from a trusted proxy makes the origin unknown, never the proxy's guess.
//! - Approved networks are CIDR blocks (`ipnet`), validated per field at approval; an
//!   approval without networks is not restricted by network (shown as such to reviewers
//!   and on the public register), an empty list admits no address at all.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use super::workflow::FieldError;

/// Where a request came from, as far as kura can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin(pub Option<IpAddr>);

impl Origin {
    /// A caller whose address is not known: admitted only where no network is required.
    pub const UNKNOWN: Origin = Origin(None);

    /// The client address of a connection from `peer` carrying the `X-Forwarded-For`
    /// values `forwarded` (in header order): the peer itself unless it is a trusted
    /// proxy; then the hops from the right, skipping trusted proxies, up to the first
    /// untrusted one. A trusted proxy that forwards nothing, or anything unparseable,
    /// gives an unknown origin.
    pub fn from_peer(peer: Option<IpAddr>, forwarded: &[&str], trusted: &[IpNet]) -> Origin {
        let Some(peer) = peer else {
            return Origin::UNKNOWN;
        };
        let is_trusted = |a: &IpAddr| trusted.iter().any(|n| n.contains(a));
        if !is_trusted(&peer) {
            return Origin(Some(peer));
        }
        let hops: Vec<&str> = forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut parsed = Vec::with_capacity(hops.len());
        for h in &hops {
            match h.parse::<IpAddr>() {
                Ok(a) => parsed.push(a),
                Err(_) => return Origin::UNKNOWN,
            }
        }
        match parsed.iter().rev().find(|a| !is_trusted(a)) {
            Some(a) => Origin(Some(*a)),
            // Every hop is a trusted proxy: the first one is where the request began.
            None => Origin(parsed.first().copied()),
        }
    }

    /// The address as text, `""` when unknown (casbin's and the audit log's form).
    pub fn text(&self) -> String {
        self.0.map(|a| a.to_string()).unwrap_or_default()
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_none(),
        }
    }
}

/// Parse an approval's networks, reporting each bad entry against `field`.
pub fn parse_networks(field: &str, list: &[String], errors: &mut Vec<FieldError>) -> Vec<IpNet> {
    if list.len() > 64 {
        errors.push(FieldError {
            field: field.into(),
            message: "at most 64 networks; use wider CIDR blocks / ネットワークは 64 件までです"
                .into(),
        });
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, n) in list.iter().enumerate() {
        match parse_network(n) {
            Some(net) => out.push(net),
            None => errors.push(FieldError {
                field: format!("{field}[{i}]"),
                message: "not a network; write a CIDR block such as 192.0.2.0/24 or 2001:db8::/48 (a single address as 192.0.2.7) / CIDR 形式（例 192.0.2.0/24）で記入してください".into(),
            }),
        }
    }
    out
}

/// One CIDR block, or a single address as its own /32 or /128.
pub fn parse_network(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if s.len() > 64 {
        return None;
    }
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The networks as casbin sees them: `*` for an approval without a network restriction,
/// otherwise the blocks joined by commas (`""` admits nothing).
pub fn networks_text(networks: Option<&[String]>) -> String {
    match networks {
        None => "*".into(),
        Some(list) => list.join(","),
    }
}

/// Whether `origin` lies inside `networks` (casbin's form, see [`networks_text`]).
/// An unknown origin is inside only an unrestricted approval; a malformed network
/// admits nothing.
pub fn admits(origin: &str, networks: &str) -> bool {
    if networks == "*" {
        return true;
    }
    let Ok(addr) = origin.parse::<IpAddr>() else {
        return false;
    };
    networks
        .split(',')
        .filter(|n| !n.is_empty())
        .any(|n| parse_network(n).is_some_and(|net| net.contains(&canonical(addr))))
}

/// An IPv4 address that arrived as IPv4-mapped IPv6 (`::ffff:a.b.c.d`, as dual-stack
/// sockets report it) is the IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// casbin's `placeOfUse(origin, networks)`.
pub fn casbin_place_of_use(
    origin: casbin::rhai::Dynamic,
    networks: casbin::rhai::Dynamic,
) -> casbin::rhai::Dynamic {
    let text = |d: casbin::rhai::Dynamic| d.into_string().unwrap_or_default();
    admits(&text(origin), &text(networks)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| parse_network(n).unwrap()).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        // An untrusted peer cannot claim another address.
        assert_eq!(
            Origin::from_peer(ip("203.0.113.9"), &["192.0.2.7"], &trusted),
            Origin(ip("203.0.113.9"))
        );
        // A trusted proxy's forwarded hop is believed...
        assert_eq!(
            Origin::from_peer(ip("10.1.1.1"), &["192.0.2.7"], &trusted),
            Origin(ip("192.0.2.7"))
        );
        // ...from the right, skipping trusted hops, so a client-supplied left part
        // cannot override what the proxy saw.
        assert_eq!(
            Origin::from_peer(
                ip("10.1.1.1"),
                &["192.0.2.7, 198.51.100.3, 10.2.2.2"],
                &trusted
            ),
            Origin(ip("198.51.100.3"))
        );
        // Several headers combine in order.
        assert_eq!(
            Origin::from_peer(ip("10.1.1.1"), &["192.0.2.7", "198.51.100.3"], &trusted),
            Origin(ip("198.51.100.3"))
        );
        // Nothing or garbage from a trusted proxy: unknown, never the proxy.
        assert_eq!(
            Origin::from_peer(ip("10.1.1.1"), &[], &trusted),
            Origin::UNKNOWN
        );
        assert_eq!(
            Origin::from_peer(ip("10.1.1.1"), &["192.0.2.7, nonsense"], &trusted),
            Origin::UNKNOWN
        );
        assert_eq!(
            Origin::from_peer(None, &["192.0.2.7"], &trusted),
            Origin::UNKNOWN
        );
    }

    #[test]
    fn admits_follows_the_blocks() {
        let n = "127.0.0.2/32,192.0.2.0/24";
        assert!(admits("127.0.0.2", n));
        assert!(!admits("127.0.0.3", n));
        assert!(admits("192.0.2.255", n));
        assert!(!admits("192.0.3.1", n));
        assert!(admits("::ffff:192.0.2.1", n), "IPv4-mapped IPv6 is IPv4");
        assert!(!admits("", n), "unknown origin");
        assert!(admits("", "*"), "unrestricted approval");
        assert!(!admits("127.0.0.2", ""), "an empty list admits nothing");
        assert!(
            !admits("127.0.0.2", "garbage"),
            "a bad block admits nothing"
        );
    }

    #[test]
    fn networks_are_validated_per_entry() {
        let mut e = Vec::new();
        let ok = parse_networks(
            "networks",
            &[
                "10.0.0.0/8".into(),
                "192.0.2.7".into(),
                "10.0.0.0/33".into(),
                "x".into(),
            ],
            &mut e,
        );
        assert_eq!(ok.len(), 2);
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["networks[2]", "networks[3]"]);
    }
}
