//! Authentication stage, login rate: at most so many login attempts per minute from one
//! client address, whatever names they try.
//!
//! Guarantees: with a limit set, an address that exceeds it is refused with `429
//! rate_limited` before any password is checked or any counter touched, so one client
//! cannot spend the server's argon2 capacity nor lock many accounts quickly (per-account
//! lockout, `store::sessions`, still holds for attempts spread over many addresses). The
//! address is the TCP peer: behind a reverse proxy every client shares the proxy's
//! address, so set the limit for the proxy's total (or limit at the proxy).
//!
//! A token bucket per address, refilled evenly (`n` a minute, bursts of `n`). It is
//! written here rather than taken from `governor`: that crate switches on a feature of
//! `portable-atomic` that rebuilds most of the dependency tree (arrow, DataFusion) for
//! these forty lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses idle this long are forgotten (their bucket would be full again anyway).
const IDLE: Duration = Duration::from_secs(120);

/// Login attempts per client address.
#[derive(Debug, Default)]
pub struct AddressRate {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl AddressRate {
    /// `n` attempts per minute per address (a burst of `n`, refilled evenly); 0: no limit.
    pub fn per_minute(n: u64) -> Self {
        Self {
            per_minute: u32::try_from(n).unwrap_or(u32::MAX),
            buckets: Mutex::default(),
        }
    }

    /// Whether one more attempt from `address` may go ahead now.
    pub fn allow(&self, address: IpAddr) -> bool {
        self.allow_at(address, Instant::now())
    }

    fn allow_at(&self, address: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let capacity = f64::from(self.per_minute);
        let refill = capacity / 60.0;
        let mut buckets = self.buckets.lock().expect("login rate buckets");
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, seen)| now.duration_since(*seen) < IDLE);
        }
        let (tokens, seen) = buckets.entry(address).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*seen).as_secs_f64() * refill).min(capacity);
        *seen = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_its_limit_is_refused_and_others_are_not() {
        let r = AddressRate::per_minute(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        assert!((0..3).all(|_| r.allow_at(a, t)));
        assert!(!r.allow_at(a, t), "the fourth attempt within the minute");
        assert!(r.allow_at(b, t), "another address has its own budget");
        assert!(
            r.allow_at(a, t + Duration::from_secs(20)),
            "one refilled after 20 s"
        );
        assert!(!r.allow_at(a, t + Duration::from_secs(21)));
        // Control: without a limit every attempt goes ahead.
        let open = AddressRate::per_minute(0);
        assert!((0..100).all(|_| open.allow(a)));
    }
}
