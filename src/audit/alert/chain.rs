//! Audit alert kind `broken_chain`: the audit chain did not verify when kura started
//! (an entry edited, deleted or reordered outside kura).
//!
//! Guarantees: raised once per start that finds the chain broken, naming the first broken
//! entry; the alert is appended after the existing entries, so it is itself chained.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{AlertRules, Bilingual, Finding};
use crate::audit::{AuditError, AuditKey, Verification};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// Raise the `broken_chain` alert for a failed start-up verification `v`, if that rule
/// is loaded. Returns the alert id.
pub async fn broken_chain_alert(
    rules: &AlertRules,
    conn: &mut AnyConnection,
    key: &AuditKey,
    v: &Verification,
) -> Result<Option<String>, AuditError> {
    let rule = rules
        .iter()
        .find(|r| matches!(r.check, super::rules::Check::BrokenChain(_)));
    let (Some(rule), Some(at)) = (rule, v.broken_at) else {
        return Ok(None);
    };
    let reason = v.reason.clone().unwrap_or_default();
    let found = Finding {
        user: None,
        application: None,
        events: vec![at],
        detail: Bilingual {
            ja: format!("監査ログ {at} 番で連結が切れています（{reason}）"),
            en: format!("the audit chain breaks at entry {at} ({reason})"),
        },
        dedupe: format!("start:{at}"),
        since: None,
    };
    super::raise(conn, key, rule, found).await.map(Some)
}
