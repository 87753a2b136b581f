//! The output airlock, the disclosure record of every cell: for each released column the
//! rules that apply to it, and for each cell its status, the outcome of each rule, its
//! contributors band, rounding, and under DP its ε, noise scale and 95 % interval — what
//! SACRO calls the output's "rules passed or failed", and what reviewers check.
//!
//! Guarantees: built only from the released answer and the disclosure check's trace, so
//! it never says more than the researcher was shown: a suppressed cell carries no band,
//! and a cell suppressed by the primary rules says `withheld` for each of them (which one
//! failed would describe a small group); only the cells the answer itself listed under
//! `differencing` say they passed the primary rules. A released protected cell without a
//! trace is refused (fail closed), never shown without its record.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{AirlockError, Result};
use crate::privacy::disclosure::trace::{AnswerTrace, CellTrace, ColumnKind, ColumnTrace};
use crate::privacy::result::{DisclosureMode, DpDisclosure, ReleasedResult};

/// One rule's outcome for one cell: `pass`, `fail`, or `withheld` (one of the cell's
/// primary rules failed; which one is not recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleOutcome {
    pub rule: String,
    pub outcome: String,
}

/// The contributors band of a released cell: `low`–`high` distinct patients (`high`
/// absent for the top band).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Band {
    pub low: u64,
    pub high: Option<u64>,
}

impl std::fmt::Display for Band {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.high {
            Some(h) => write!(f, "{}–{h}", self.low),
            None => write!(f, "≥{}", self.low),
        }
    }
}

/// The noise of one DP cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CellNoise {
    pub epsilon: f64,
    pub noise_scale: f64,
    /// 95 % interval `[low, high]` around the released value.
    #[schema(value_type = Option<Vec<f64>>)]
    pub ci95: Option<[f64; 2]>,
}

/// The record of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CellRecord {
    /// `key` (a public-domain group key), `public` (from public data only), `released`
    /// or `suppressed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contributors: Option<Band>,
    pub rules: Vec<RuleOutcome>,
    /// Why a suppressed cell was suppressed: `disclosure_rules`, `differencing` or
    /// `dp_release_threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<CellNoise>,
}

/// The rules of one released column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ColumnRecord {
    pub name: String,
    /// `key`, `public`, `protected` (suppression rules) or `noised` (DP).
    pub kind: String,
    /// The rules every cell of the column is checked by.
    pub rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<u32>,
    /// DP: the aggregate, ε, sensitivity, noise scale and clamp bounds of the column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub dp: Option<Value>,
}

/// The records of one answer: per column, and per cell (row-major), plus the released
/// cells' ledger sets (`(row, column, set indices)`, for the re-check; never shown).
pub struct Records {
    pub columns: Vec<ColumnRecord>,
    pub cells: Vec<Vec<CellRecord>>,
    pub cell_sets: Vec<(usize, usize, Vec<u32>)>,
}

fn outcome(rule: &str, outcome: &str) -> RuleOutcome {
    RuleOutcome {
        rule: rule.into(),
        outcome: outcome.into(),
    }
}

/// The primary rules of a protected column, in the order the check applies them.
fn primary_rules(c: &ColumnTrace) -> Vec<&'static str> {
    let mut rules = vec!["k"];
    if c.facility {
        rules.push("facility_k");
    }
    if c.dominance {
        rules.push("dominance");
    }
    rules
}

/// The records of an answer.
pub fn records(result: &ReleasedResult, trace: &AnswerTrace) -> Result<Records> {
    match result.disclosure.mode {
        DisclosureMode::Suppression => suppression(result, trace),
        DisclosureMode::Dp => Ok(dp(result)),
    }
}

fn not_releasable() -> AirlockError {
    AirlockError::refused(
        400,
        "result_not_releasable",
        "This answer has no disclosure record for one of its cells, so it cannot be checked for release; run the query again and request the new answer. / この回答には一部のセルの開示記録がないため、持ち出し審査ができません。クエリを再実行し、新しい回答で申請してください。",
    )
}

fn suppression(result: &ReleasedResult, trace: &AnswerTrace) -> Result<Records> {
    let d = &result.disclosure;
    let ncols = result.columns.len();
    if trace.columns.len() != ncols || trace.cells.len() != result.rows.len() {
        return Err(not_releasable());
    }
    let columns = result
        .columns
        .iter()
        .zip(&trace.columns)
        .map(|(col, c)| {
            let (kind, rules) = match c.kind {
                ColumnKind::Key => ("key", vec!["public_domain".to_string()]),
                ColumnKind::Public => ("public", Vec::new()),
                ColumnKind::Protected => {
                    let mut rules: Vec<String> =
                        primary_rules(c).into_iter().map(String::from).collect();
                    if c.differencing {
                        rules.push("differencing".into());
                    }
                    ("protected", rules)
                }
            };
            ColumnRecord {
                name: col.name.clone(),
                kind: kind.into(),
                rules,
                rounding: c.rounding,
                dp: None,
            }
        })
        .collect();
    let suppressed_cells: HashSet<[usize; 2]> = d.suppressed.iter().copied().collect();
    let differencing: HashSet<[usize; 2]> = d.differencing.iter().copied().collect();
    let mut cells = Vec::with_capacity(result.rows.len());
    let mut cell_sets = Vec::new();
    for (r, row_trace) in trace.cells.iter().enumerate() {
        let mut row = Vec::with_capacity(ncols);
        for (k, c) in trace.columns.iter().enumerate() {
            let suppressed = suppressed_cells.contains(&[r, k]);
            let by_differencing = differencing.contains(&[r, k]);
            let cell_trace = row_trace.get(k).and_then(Option::as_ref);
            let rec = protected_cell(c, suppressed, by_differencing, cell_trace)?;
            if let (false, Some(t)) = (suppressed, cell_trace) {
                cell_sets.push((r, k, t.sets.clone()));
            }
            row.push(rec);
        }
        cells.push(row);
    }
    Ok(Records {
        columns,
        cells,
        cell_sets,
    })
}

/// The record of one cell of column `c` in suppression mode.
fn protected_cell(
    c: &ColumnTrace,
    suppressed: bool,
    by_differencing: bool,
    t: Option<&CellTrace>,
) -> Result<CellRecord> {
    let blank = |status: &str| CellRecord {
        status: status.into(),
        contributors: None,
        rules: Vec::new(),
        reason: None,
        rounding: None,
        dp: None,
    };
    match c.kind {
        ColumnKind::Key => {
            let mut rec = blank("key");
            rec.rules.push(outcome("public_domain", "pass"));
            return Ok(rec);
        }
        ColumnKind::Public => return Ok(blank("public")),
        ColumnKind::Protected => {}
    }
    let primary = primary_rules(c);
    let mut rec = blank(if suppressed { "suppressed" } else { "released" });
    if suppressed && by_differencing {
        rec.rules = primary.iter().map(|r| outcome(r, "pass")).collect();
        rec.rules.push(outcome("differencing", "fail"));
        rec.reason = Some("differencing".into());
    } else if suppressed {
        rec.rules = primary.iter().map(|r| outcome(r, "withheld")).collect();
        rec.reason = Some("disclosure_rules".into());
    } else {
        let t = t.ok_or_else(not_releasable)?;
        rec.rules = primary.iter().map(|r| outcome(r, "pass")).collect();
        if c.differencing {
            rec.rules.push(outcome("differencing", "pass"));
        }
        rec.contributors = t.band.map(|(low, high)| Band { low, high });
        rec.rounding = c.rounding;
    }
    Ok(rec)
}

fn dp(result: &ReleasedResult) -> Records {
    let d = &result.disclosure;
    let noise = d.dp.as_ref();
    let noised = |k: usize| noise.and_then(|n| n.columns.iter().find(|c| c.index == k));
    let columns = result
        .columns
        .iter()
        .enumerate()
        .map(|(k, col)| match noised(k) {
            Some(c) => ColumnRecord {
                name: col.name.clone(),
                kind: "noised".into(),
                rules: vec!["dp_noise".into(), "dp_release_threshold".into()],
                rounding: None,
                dp: Some(serde_json::json!({
                    "aggregate": c.aggregate,
                    "epsilon": c.epsilon,
                    "sensitivity": c.sensitivity,
                    "noise_scale": c.noise_scale,
                    "ci95_half_width": c.ci95_half_width,
                    "clamp": c.clamp,
                })),
            },
            None => ColumnRecord {
                name: col.name.clone(),
                kind: "key".into(),
                rules: vec!["public_domain".into()],
                rounding: None,
                dp: None,
            },
        })
        .collect();
    let suppressed: HashSet<[usize; 2]> = d.suppressed.iter().copied().collect();
    let cells = result
        .rows
        .iter()
        .enumerate()
        .map(|(r, row)| {
            (0..result.columns.len())
                .map(|k| dp_cell(noise, r, k, row.get(k), suppressed.contains(&[r, k])))
                .collect()
        })
        .collect();
    Records {
        columns,
        cells,
        cell_sets: Vec::new(),
    }
}

fn dp_cell(
    noise: Option<&DpDisclosure>,
    r: usize,
    k: usize,
    value: Option<&Value>,
    suppressed: bool,
) -> CellRecord {
    let column = noise.and_then(|n| n.columns.iter().find(|c| c.index == k));
    let Some(c) = column else {
        return CellRecord {
            status: "key".into(),
            contributors: None,
            rules: vec![outcome("public_domain", "pass")],
            reason: None,
            rounding: None,
            dp: None,
        };
    };
    if suppressed {
        return CellRecord {
            status: "suppressed".into(),
            contributors: None,
            rules: vec![
                outcome("dp_noise", "pass"),
                outcome("dp_release_threshold", "fail"),
            ],
            reason: Some("dp_release_threshold".into()),
            rounding: None,
            dp: None,
        };
    }
    let interval = noise
        .and_then(|n| n.intervals.iter().find(|i| i.row == r && i.column == k))
        .map(|i| [i.low, i.high])
        .or_else(|| {
            let v = value.and_then(Value::as_f64)?;
            c.ci95_half_width.map(|h| [v - h, v + h])
        });
    CellRecord {
        status: "released".into(),
        contributors: None,
        rules: vec![
            outcome("dp_noise", "pass"),
            outcome("dp_release_threshold", "pass"),
        ],
        reason: None,
        rounding: None,
        dp: Some(CellNoise {
            epsilon: c.epsilon,
            noise_scale: c.noise_scale,
            ci95: interval,
        }),
    }
}

/// The marker a suppressed cell leaves as, in every file and on screen: `<k` under
/// suppression, `—` under DP (its noisy count fell below the release threshold).
pub fn marker(result: &ReleasedResult) -> String {
    match result.disclosure.mode {
        DisclosureMode::Suppression => format!("<{}", result.disclosure.threshold),
        DisclosureMode::Dp => "—".into(),
    }
}

/// The suppressed cells of `result`, for lookups while rendering.
pub fn suppressed(result: &ReleasedResult) -> HashSet<[usize; 2]> {
    result.disclosure.suppressed.iter().copied().collect()
}
