//! Audit alert kind `dp_budget_low`: an application's ε budget for the fiscal year falls
//! below a share of its total (10 % by default) after a DP answer.
//!
//! Guarantees: reads the ε ledger (`budget_ledger`, spent and reserved) and the approved
//! budget inside the answer's own transaction, after its spend was settled; one alert per
//! application and fiscal year.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Bilingual, Checked, Finding, Trigger};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Remaining share of the budget (0–1) below which the alert is raised.
    pub below: f64,
}

pub async fn check(p: &Params, conn: &mut AnyConnection, t: &Trigger<'_>) -> Checked {
    let e = t.event;
    let (Some(app), Some(fy)) = (&e.application, e.detail["fiscal_year"].as_i64()) else {
        return Ok(None);
    };
    if e.action != "query.run" || e.detail["mode"] != "dp" {
        return Ok(None);
    }
    let approval: Option<Option<String>> =
        sqlx::query_scalar("SELECT approval FROM applications WHERE id = $1")
            .bind(app)
            .fetch_optional(&mut *conn)
            .await?;
    let budget = approval
        .flatten()
        .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
        .and_then(|a| a["epsilon_budget"].as_f64());
    let Some(budget) = budget.filter(|b| *b > 0.0) else {
        return Ok(None);
    };
    let used: f64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(epsilon), 0.0) FROM budget_ledger
         WHERE application_id = $1 AND fiscal_year = $2 AND state IN ('spent', 'reserved')",
    )
    .bind(app)
    .bind(fy)
    .fetch_one(&mut *conn)
    .await?;
    let left = ((budget - used) / budget).max(0.0);
    if left >= p.below {
        return Ok(None);
    }
    let pct = (left * 100.0).round();
    Ok(Some(Finding {
        user: Some(e.actor.clone()),
        application: Some(app.clone()),
        events: vec![t.seq],
        detail: Bilingual {
            ja: format!(
                "申請 {app} の {fy} 年度の ε 予算の残りが {pct}%（ε {used:.3} / {budget}）"
            ),
            en: format!(
                "application {app}: {pct}% of the FY{fy} ε budget left (ε {used:.3} of {budget})"
            ),
        },
        dedupe: format!("{app}:{fy}"),
        since: None,
    }))
}
