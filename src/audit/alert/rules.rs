//! Audit stage, alert rule files: parsing `audit/*.toml` (one rule per file) into checks.
//!
//! Guarantees: every field is checked at load — `id` (a unique snake_case name), `kind`
//! (one of the checks below), `severity` (`info` | `warning` | `critical`), the bilingual
//! `explanation` and the kind's own `parameters` (unknown or mistyped ones refused) — and
//! an error names the file and the field, so a typo in a rule stops kura at start instead
//! of silently disabling the rule.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use super::{Checked, Trigger};
use super::{budget, chain, differencing, hours, logins, near_identical, refusals};

/// The rules compiled into kura (`audit/*.toml`), used when no `alert_rules_dir` is set.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "repeated_refusals.toml",
        include_str!("../../../audit/repeated_refusals.toml"),
    ),
    (
        "repeated_execution_errors.toml",
        include_str!("../../../audit/repeated_execution_errors.toml"),
    ),
    (
        "differencing_suppression.toml",
        include_str!("../../../audit/differencing_suppression.toml"),
    ),
    (
        "near_identical_queries.toml",
        include_str!("../../../audit/near_identical_queries.toml"),
    ),
    (
        "failed_logins.toml",
        include_str!("../../../audit/failed_logins.toml"),
    ),
    ("lockout.toml", include_str!("../../../audit/lockout.toml")),
    (
        "outside_working_hours.toml",
        include_str!("../../../audit/outside_working_hours.toml"),
    ),
    (
        "broken_chain.toml",
        include_str!("../../../audit/broken_chain.toml"),
    ),
    (
        "dp_budget_low.toml",
        include_str!("../../../audit/dp_budget_low.toml"),
    ),
];

/// A rule file that cannot be used: which file, which field, and why.
#[derive(Debug, thiserror::Error)]
#[error(
    "alert rule {file}: field `{field}`: {reason}; fix the file (see audit/README.md) / 監査アラート規則 {file} の項目 `{field}` が不正です"
)]
pub struct RuleError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

/// Text in Japanese and English.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bilingual {
    pub ja: String,
    pub en: String,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a rule looks for, with its parameters.
#[derive(Debug, Clone)]
pub enum Check {
    RepeatedOutcomes(refusals::Params),
    Differencing(differencing::Params),
    NearIdentical(near_identical::Params),
    FailedLogins(logins::FailedParams),
    Lockout(logins::LockoutParams),
    OutsideHours(hours::Params),
    BrokenChain(chain::Params),
    DpBudgetLow(budget::Params),
}

/// One loaded rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub severity: Severity,
    pub explanation: Bilingual,
    pub check: Check,
}

impl Rule {
    /// Look at one appended event.
    pub async fn check(&self, conn: &mut AnyConnection, t: &Trigger<'_>) -> Checked {
        match &self.check {
            Check::RepeatedOutcomes(p) => refusals::check(p, conn, t).await,
            Check::Differencing(p) => differencing::check(p, conn, t).await,
            Check::NearIdentical(p) => near_identical::check(p, conn, t).await,
            Check::FailedLogins(p) => logins::check_failed(p, conn, t).await,
            Check::Lockout(p) => Ok(logins::check_lockout(p, t)),
            Check::OutsideHours(p) => Ok(hours::check(p, t)),
            Check::DpBudgetLow(p) => budget::check(p, conn, t).await,
            // Evaluated once at start-up (`broken_chain_alert`), not per event.
            Check::BrokenChain(_) => Ok(None),
        }
    }
}

/// The loaded rule set.
#[derive(Debug, Clone, Default)]
pub struct AlertRules {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    kind: String,
    severity: Severity,
    explanation: Bilingual,
    #[serde(default)]
    parameters: toml::Table,
}

fn bad(file: &str, field: &str, reason: impl Into<String>) -> RuleError {
    RuleError {
        file: file.into(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn params<P: DeserializeOwned>(file: &str, table: toml::Table) -> Result<P, RuleError> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| bad(file, "parameters", e.message().to_string()))
}

/// Which top-level field a `toml` error is about (its message names it for unknown,
/// missing and mistyped fields); `(file)` when it is a syntax error.
fn field_of(message: &str) -> String {
    for field in ["id", "kind", "severity", "explanation", "parameters"] {
        if message.contains(&format!("`{field}`")) {
            return field.into();
        }
    }
    message
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "(file)".into())
}

/// The dotted key (`section.key`) on the line where a `toml` error starts, if any.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim().to_string();
    let section = before[..line_start].lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix('[')?
            .strip_suffix(']')
            .map(str::to_string)
    });
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key,
    })
}

/// Parse one rule file's text.
pub fn parse(file: &str, text: &str) -> Result<Rule, RuleError> {
    let raw: RuleFile = toml::from_str(text).map_err(|e| {
        let m = e.message().to_string();
        let field = e
            .span()
            .filter(|_| !m.starts_with("missing field"))
            .and_then(|s| key_at(text, s.start))
            .unwrap_or_else(|| field_of(&m));
        bad(file, &field, m)
    })?;
    let id_ok = !raw.id.is_empty()
        && raw.id.len() <= 64
        && raw
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !id_ok {
        return Err(bad(file, "id", "use 1–64 characters of a–z, 0–9 and _"));
    }
    for (lang, text) in [("ja", &raw.explanation.ja), ("en", &raw.explanation.en)] {
        if text.trim().is_empty() || text.len() > 1000 {
            return Err(bad(
                file,
                &format!("explanation.{lang}"),
                "give 1–1000 bytes",
            ));
        }
    }
    let p = raw.parameters;
    let check = match raw.kind.as_str() {
        "repeated_outcomes" => Check::RepeatedOutcomes(params(file, p)?),
        "differencing_suppression" => Check::Differencing(params(file, p)?),
        "near_identical_queries" => Check::NearIdentical(params(file, p)?),
        "failed_logins" => Check::FailedLogins(params(file, p)?),
        "lockout" => Check::Lockout(params(file, p)?),
        "outside_working_hours" => {
            let h: hours::Params = params(file, p)?;
            h.validate().map_err(|(f, r)| bad(file, &f, r))?;
            Check::OutsideHours(h)
        }
        "broken_chain" => Check::BrokenChain(params(file, p)?),
        "dp_budget_low" => Check::DpBudgetLow(params(file, p)?),
        other => {
            return Err(bad(
                file,
                "kind",
                format!(
                    "unknown kind `{other}`; one of repeated_outcomes, differencing_suppression, near_identical_queries, failed_logins, lockout, outside_working_hours, broken_chain, dp_budget_low"
                ),
            ));
        }
    };
    Ok(Rule {
        id: raw.id,
        severity: raw.severity,
        explanation: raw.explanation,
        check,
    })
}

impl AlertRules {
    /// No rules (stores opened by tools and tests that do not watch).
    pub fn none() -> Self {
        Self::default()
    }

    /// The rules compiled into kura.
    pub fn embedded() -> Result<Self, RuleError> {
        Self::from_texts(EMBEDDED.iter().map(|(f, t)| (f.to_string(), t.to_string())))
    }

    /// Every `*.toml` file of `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Self, RuleError> {
        let shown = dir.display().to_string();
        let entries =
            std::fs::read_dir(dir).map_err(|e| bad(&shown, "(directory)", e.to_string()))?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut texts = Vec::new();
        for path in paths {
            let name = path.display().to_string();
            let text =
                std::fs::read_to_string(&path).map_err(|e| bad(&name, "(file)", e.to_string()))?;
            texts.push((name, text));
        }
        Self::from_texts(texts)
    }

    fn from_texts(texts: impl IntoIterator<Item = (String, String)>) -> Result<Self, RuleError> {
        let mut rules: Vec<Rule> = Vec::new();
        for (file, text) in texts {
            let rule = parse(&file, &text)?;
            if rules.iter().any(|r| r.id == rule.id) {
                return Err(bad(
                    &file,
                    "id",
                    format!("`{}` is used by another rule file", rule.id),
                ));
            }
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// The rule with `id`, if loaded.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// These rules without the rule `id` (an operator switching one off; the control of
    /// each alert test).
    pub fn without(mut self, id: &str) -> Self {
        self.rules.retain(|r| r.id != id);
        self
    }

    /// Replace one rule's parameters by those of `text` (tests and operators that tune a
    /// shipped rule, e.g. working hours, without copying the whole directory).
    pub fn with_rule(mut self, file: &str, text: &str) -> Result<Self, RuleError> {
        let rule = parse(file, text)?;
        self.rules.retain(|r| r.id != rule.id);
        self.rules.push(rule);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_rules_load() {
        let r = AlertRules::embedded().unwrap();
        assert_eq!(r.iter().count(), EMBEDDED.len());
    }

    #[test]
    fn errors_name_file_and_field() {
        let base = "id = \"x\"\nkind = \"repeated_outcomes\"\nseverity = \"warning\"\n[explanation]\nja = \"あ\"\nen = \"a\"\n[parameters]\naction = \"query.run\"\noutcomes = [\"denied\"]\ncount = 3\nwindow_minutes = 10\n";
        assert!(parse("f.toml", base).is_ok());
        let e = parse("f.toml", &base.replace("warning", "loud")).unwrap_err();
        assert_eq!((e.file.as_str(), e.field.as_str()), ("f.toml", "severity"));
        let e = parse("f.toml", &base.replace("count = 3", "count = \"3\"")).unwrap_err();
        assert_eq!(e.field, "parameters");
        assert!(e.reason.contains("expected"), "{e}");
        let e = parse("f.toml", &base.replace("repeated_outcomes", "nope")).unwrap_err();
        assert_eq!(e.field, "kind");
        let e = parse("f.toml", &base.replace("id = \"x\"", "id = \"X Y\"")).unwrap_err();
        assert_eq!(e.field, "id");
        let e = parse("f.toml", &format!("{base}colour = 1\n")).unwrap_err();
        assert_eq!(e.field, "parameters", "{e}");
        let e = parse("f.toml", &base.replace("id = \"x\"\n", "")).unwrap_err();
        assert_eq!(e.field, "id", "{e}");
    }
}
