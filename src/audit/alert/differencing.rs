//! Audit alert kind `differencing_suppression`: an answer had cells suppressed for
//! `differencing` (their contributors differ from another released cell's by fewer than
//! k patients) — the pattern of a differencing attack, stopped by the disclosure check.
//!
//! Guarantees: reads the `differencing` cells the query's own audit event records; at
//! most one alert per user and window, listing every such answer in the window.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::window::{before, recent};
use super::{Bilingual, Checked, Finding, Trigger};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Differencing cells in one answer that count it.
    pub min_cells: u32,
    pub window_minutes: u32,
}

fn cells(event: &serde_json::Value) -> usize {
    event["detail"]["differencing"]
        .as_array()
        .map_or(0, Vec::len)
}

pub async fn check(p: &Params, conn: &mut AnyConnection, t: &Trigger<'_>) -> Checked {
    let e = t.event;
    let here = e.detail["differencing"].as_array().map_or(0, Vec::len);
    if e.action != "query.run" || e.outcome != "ok" || here < p.min_cells.max(1) as usize {
        return Ok(None);
    }
    let since = before(t.at, p.window_minutes);
    let seen = recent(conn, &e.actor, "query.run", since, 200).await?;
    let events: Vec<i64> = seen
        .iter()
        .filter(|s| cells(&s.event) >= p.min_cells.max(1) as usize)
        .map(|s| s.seq)
        .collect();
    Ok(Some(Finding {
        user: Some(e.actor.clone()),
        application: e.application.clone(),
        detail: Bilingual {
            ja: format!(
                "利用者 {} の回答で差分による秘匿 {here} セル（{} 件の回答）",
                e.actor,
                events.len()
            ),
            en: format!(
                "user {}: {here} cells suppressed for differencing ({} answers)",
                e.actor,
                events.len()
            ),
        },
        events,
        dedupe: e.actor.clone(),
        since: Some(since),
    }))
}
