//! Audit alert kind `near_identical_queries`: many queries of one user with the same plan
//! fingerprint (the same query shape) but different SQL (other constants) in a short
//! window — a series that walks a filter to isolate people.
//!
//! Guarantees: the fingerprint is the one the query's audit event records (constants
//! removed, see `query::fingerprint`); identical re-runs do not count, only distinct SQL;
//! at most one alert per user, fingerprint and window.

use std::collections::BTreeSet;

use serde::Deserialize;
use sqlx::AnyConnection;

use super::window::{before, recent};
use super::{Bilingual, Checked, Finding, Trigger};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Distinct SQL texts of one fingerprint that raise the alert.
    pub count: u32,
    pub window_minutes: u32,
}

pub async fn check(p: &Params, conn: &mut AnyConnection, t: &Trigger<'_>) -> Checked {
    let e = t.event;
    let Some(fp) = e.detail["plan_fingerprint"].as_str() else {
        return Ok(None);
    };
    if e.action != "query.run" {
        return Ok(None);
    }
    let since = before(t.at, p.window_minutes);
    let seen = recent(conn, &e.actor, "query.run", since, 500).await?;
    let mut sqls = BTreeSet::new();
    let mut events = Vec::new();
    for s in seen
        .iter()
        .filter(|s| s.event["detail"]["plan_fingerprint"] == fp)
    {
        events.push(s.seq);
        sqls.insert(
            s.event["detail"]["sql"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    if (sqls.len() as u32) < p.count.max(2) {
        return Ok(None);
    }
    let (n, w) = (sqls.len(), p.window_minutes);
    let short: String = fp.chars().take(12).collect();
    Ok(Some(Finding {
        user: Some(e.actor.clone()),
        application: e.application.clone(),
        events,
        detail: Bilingual {
            ja: format!(
                "利用者 {} が {w} 分間に同じ形（{short}）で定数だけ異なるクエリを {n} 種",
                e.actor
            ),
            en: format!(
                "user {} sent {n} variants of one query shape ({short}) in {w} minutes",
                e.actor
            ),
        },
        dedupe: format!("{}:{fp}", e.actor),
        since: Some(since),
    }))
}
