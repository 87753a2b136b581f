//! Audit alert kinds `failed_logins` and `lockout`: password guessing against one account
//! (counted by the attempted name, so unknown names count too) and the lockout it causes.
//!
//! Guarantees: `failed_logins` counts `session.login` refusals with `invalid_credentials`
//! of one attempted name in the window; `lockout` fires on the failure that locks the
//! account and on attempts refused while it is locked — once per name and window.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::window::{before, recent};
use super::{Bilingual, Checked, Finding, Trigger};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedParams {
    pub count: u32,
    pub window_minutes: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutParams {
    /// One alert per account within this many minutes.
    pub window_minutes: u32,
}

fn is_failure(code: Option<&str>) -> bool {
    code == Some("invalid_credentials")
}

pub async fn check_failed(p: &FailedParams, conn: &mut AnyConnection, t: &Trigger<'_>) -> Checked {
    let e = t.event;
    if e.action != "session.login" || !is_failure(e.code.as_deref()) {
        return Ok(None);
    }
    let since = before(t.at, p.window_minutes);
    let seen = recent(conn, &e.actor, "session.login", since, p.count.max(1) * 4).await?;
    let events: Vec<i64> = seen
        .iter()
        .filter(|s| is_failure(s.code.as_deref()))
        .map(|s| s.seq)
        .collect();
    if (events.len() as u32) < p.count.max(1) {
        return Ok(None);
    }
    let (n, w) = (events.len(), p.window_minutes);
    Ok(Some(Finding {
        user: Some(e.actor.clone()),
        application: None,
        events,
        detail: Bilingual {
            ja: format!("アカウント名 {} で {w} 分間に {n} 回ログイン失敗", e.actor),
            en: format!("{n} failed logins as {} in {w} minutes", e.actor),
        },
        dedupe: e.actor.clone(),
        since: Some(since),
    }))
}

pub fn check_lockout(p: &LockoutParams, t: &Trigger<'_>) -> Option<Finding> {
    let e = t.event;
    let locks = e.detail["locked"] == true;
    let refused_locked = e.code.as_deref() == Some("account_locked");
    if e.action != "session.login" || !(locks || refused_locked) {
        return None;
    }
    Some(Finding {
        user: Some(e.actor.clone()),
        application: None,
        events: vec![t.seq],
        detail: Bilingual {
            ja: format!("アカウント名 {} がロックされました", e.actor),
            en: format!("account name {} is locked out", e.actor),
        },
        dedupe: e.actor.clone(),
        since: Some(before(t.at, p.window_minutes)),
    })
}
