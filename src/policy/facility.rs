//! Authorization stage, medical institutions (seed 001 item 8: 「医療機関は自施設患者の
//! データを」): the standing scope of a facility account, like a PMS team's but bound to
//! one facility code instead of a manufacturer.
//!
//! Guarantees: a facility scope covers the registries facilities write to (nanbyo, ALS,
//! regenerative medicine; not the self-registration registry JaSMIn) and is restricted to
//! one facility code, so its extract holds only the rows written at that facility, of
//! the patients it has records of (`sql::extract`); only an account bound to that code
//! reaches it (casbin `g2` line `user → FAC-<code>`); its k is the strictest of the
//! disclosure rules over those datasets, never a literal; facility codes are short
//! ASCII tokens, checked before they reach a scope or a policy line.

use crate::privacy::result::DisclosureMode;
use crate::sql::scope::Scope;

/// Prefix of facility standing scope ids (`FAC-F13001`).
pub const FACILITY_PREFIX: &str = "FAC-";

/// The datasets a medical institution writes records to.
pub const FACILITY_DATASETS: [&str; 3] = ["nanbyo", "als", "regen"];

/// The standing scope id of a facility account.
pub fn facility_scope_id(code: &str) -> String {
    format!("{FACILITY_PREFIX}{code}")
}

/// Whether `code` is a facility code kura accepts: 1–32 ASCII letters, digits, `-`, `_`.
/// Anything else never becomes part of a scope, a policy line or a query.
pub fn valid_facility_code(code: &str) -> bool {
    (1..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The scope of a facility's standing access: its registries, its own facility only.
pub fn facility_scope(code: &str) -> Scope {
    Scope {
        datasets: FACILITY_DATASETS.iter().map(|d| d.to_string()).collect(),
        facilities: Some(vec![code.to_string()]),
        ..Default::default()
    }
}

/// The standing terms of a facility scope: its scope, suppression, at `k`.
pub fn facility_terms(code: &str, k: u32) -> (Scope, DisclosureMode, u32) {
    (facility_scope(code), DisclosureMode::Suppression, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facility_codes_are_short_plain_tokens() {
        for ok in ["F13001", "H-1", "a_b"] {
            assert!(valid_facility_code(ok), "{ok}");
        }
        for bad in ["", "F13'", "F 1", "x,y", "ｆ", &"F".repeat(33), "a\nb"] {
            assert!(!valid_facility_code(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_facility_scope_is_one_facility_of_the_facility_registries() {
        let s = facility_scope("F13001");
        assert_eq!(s.facilities, Some(vec!["F13001".to_string()]));
        assert!(!s.datasets.iter().any(|d| d == "jasmin"));
        assert_eq!(s.manufacturers, None);
    }
}
