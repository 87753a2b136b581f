//! Audit alert kind `outside_working_hours`: a person acting outside the configured
//! working hours (local time at a fixed UTC offset, JST by default) or on a day off.
//!
//! Guarantees: only the configured actions of people count (`system` and
//! `operator:*` jobs never); one alert per user and local day.

use chrono::{Datelike, FixedOffset, NaiveTime, Timelike};
use serde::Deserialize;

use super::{Bilingual, Finding, Trigger};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Start of the working day, `HH:MM` local time.
    pub start: String,
    /// End of the working day (exclusive), `HH:MM`; `24:00` for midnight.
    pub end: String,
    /// Working days: `mon` … `sun`.
    pub days: Vec<String>,
    /// Local time's offset from UTC in hours (JST: 9).
    #[serde(default = "jst")]
    pub utc_offset_hours: i32,
    /// Actions that count as access.
    pub actions: Vec<String>,
}

fn jst() -> i32 {
    9
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Minutes after local midnight of `HH:MM` (`24:00` allowed).
fn minutes(text: &str) -> Option<u32> {
    if text == "24:00" {
        return Some(24 * 60);
    }
    NaiveTime::parse_from_str(text, "%H:%M")
        .ok()
        .map(|t| t.hour() * 60 + t.minute())
}

impl Params {
    /// Field and reason of the first bad parameter.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, r: &str| Err((format!("parameters.{f}"), r.to_string()));
        let (Some(s), Some(e)) = (minutes(&self.start), minutes(&self.end)) else {
            return bad("start", "start and end are HH:MM (00:00–24:00)");
        };
        if s >= e {
            return bad("end", "end must be after start");
        }
        if let Some(d) = self.days.iter().find(|d| !DAYS.contains(&d.as_str())) {
            return bad(
                "days",
                &format!("`{d}` is not one of mon tue wed thu fri sat sun"),
            );
        }
        if !(-12..=14).contains(&self.utc_offset_hours) {
            return bad("utc_offset_hours", "between -12 and 14");
        }
        Ok(())
    }
}

pub fn check(p: &Params, t: &Trigger<'_>) -> Option<Finding> {
    let e = t.event;
    let person = e.actor != "system" && !e.actor.starts_with("operator:");
    if !person || e.outcome == "denied" && e.action == "session.login" {
        return None;
    }
    if !p.actions.iter().any(|a| a == &e.action) {
        return None;
    }
    let offset = FixedOffset::east_opt(p.utc_offset_hours * 3600)?;
    let local = t.at.with_timezone(&offset);
    let now = local.hour() * 60 + local.minute();
    let day = DAYS[local.weekday().num_days_from_monday() as usize];
    let working = p.days.iter().any(|d| d == day)
        && minutes(&p.start).is_some_and(|s| now >= s)
        && minutes(&p.end).is_some_and(|end| now < end);
    if working {
        return None;
    }
    let when = local.format("%Y-%m-%d %H:%M").to_string();
    Some(Finding {
        user: Some(e.actor.clone()),
        application: e.application.clone(),
        events: vec![t.seq],
        detail: Bilingual {
            ja: format!(
                "利用者 {} が勤務時間外（{when}、{}〜{}）に {}",
                e.actor, p.start, p.end, e.action
            ),
            en: format!(
                "user {}: {} at {when}, outside {}–{}",
                e.actor, e.action, p.start, p.end
            ),
        },
        dedupe: format!("{}:{}", e.actor, local.date_naive()),
        since: None,
    })
}
