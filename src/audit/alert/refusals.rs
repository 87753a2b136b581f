//! Audit alert kind `repeated_outcomes`: one user's refusals (or execution errors) of one
//! action piling up in a short window — probing the guard, or a broken script.
//!
//! Guarantees: counts only the triggering user's own events of the configured action and
//! outcomes (and, if given, codes); at most one alert per user and window.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::window::{before, recent};
use super::{Bilingual, Checked, Finding, Trigger};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Action watched, e.g. `query.run`.
    pub action: String,
    /// Outcomes counted: `denied`, `error`.
    pub outcomes: Vec<String>,
    /// Only these codes (empty: any).
    #[serde(default)]
    pub codes: Vec<String>,
    /// How many within the window raise the alert.
    pub count: u32,
    pub window_minutes: u32,
}

pub async fn check(p: &Params, conn: &mut AnyConnection, t: &Trigger<'_>) -> Checked {
    let e = t.event;
    let counted = |outcome: &str, code: Option<&str>| {
        p.outcomes.iter().any(|o| o == outcome)
            && (p.codes.is_empty() || code.is_some_and(|c| p.codes.iter().any(|x| x == c)))
    };
    if e.action != p.action || !counted(&e.outcome, e.code.as_deref()) {
        return Ok(None);
    }
    let since = before(t.at, p.window_minutes);
    let seen = recent(conn, &e.actor, &p.action, since, p.count.max(1) * 4).await?;
    let events: Vec<i64> = seen
        .iter()
        .filter(|s| counted(&s.outcome, s.code.as_deref()))
        .map(|s| s.seq)
        .collect();
    if (events.len() as u32) < p.count.max(1) {
        return Ok(None);
    }
    let n = events.len();
    let w = p.window_minutes;
    Ok(Some(Finding {
        user: Some(e.actor.clone()),
        application: e.application.clone(),
        events,
        detail: Bilingual {
            ja: format!("利用者 {} が {w} 分間に {n} 回（{}）", e.actor, p.action),
            en: format!("user {} had {n} in {w} minutes ({})", e.actor, p.action),
        },
        dedupe: e.actor.clone(),
        since: Some(since),
    }))
}
