//! Privacy stage, configuration: the disclosure rules of suppression mode, read from
//! `policies/disclosure.toml` (compiled in, like the catalogue) with per-dataset overrides.
//!
//! Guarantees: every value is validated at load (k ≥ 1, ratios in range), unknown keys are
//! refused, and a query over several datasets gets the strictest value of every rule
//! ([`DisclosureRules::effective`]). An approval may only *raise* k ([`DisclosureRules::with_threshold`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The rules shipped with kura.
pub const EMBEDDED_RULES: &str = include_str!("../../policies/disclosure.toml");

/// The rules file version this build understands.
pub const RULES_VERSION: u32 = 1;

/// Errors while loading the rules; each names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read disclosure rules {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disclosure rules are not valid TOML (unknown keys are refused): {0}")]
    Parse(#[from] toml::de::Error),
    #[error(
        "disclosure rules schema_version {found} is not supported (this build reads {RULES_VERSION})"
    )]
    Version { found: u32 },
    #[error("disclosure rules: {0}")]
    Invalid(String),
}

/// The rule values that apply to one query.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    /// Minimum distinct patients per released cell.
    pub k: u32,
    /// Minimum distinct facilities per cell where a facility column feeds it.
    pub facility_k: u32,
    /// nk-dominance: the `dominance_n` largest per-patient contributions to a SUM may not
    /// exceed `dominance_k` of its total.
    pub dominance_n: u32,
    pub dominance_k: f64,
    /// p% rule: total − top two ≥ `p_ratio` × top one.
    pub p_ratio: f64,
    /// Round released counts to a multiple of this base.
    pub rounding: Option<u32>,
    /// The second-line defences (issue 11); all on except in attack-test controls.
    pub defences: Defences,
}

/// The second line of disclosure control, one switch per defence. Every defence is on in
/// every rules file (a policy cannot switch one off: there is no TOML key for them); only
/// an attack test's *control* builds rules with one switched off
/// ([`DisclosureRules::with_defences`]), to show that the attack it stops would work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defences {
    /// Secondary suppression of cells that differ from another cell (of the same answer
    /// or of the release ledger) by fewer than k patients.
    pub differencing: bool,
    /// No ORDER BY … LIMIT/OFFSET (or other order-dependent row selection) over patient
    /// rows below an aggregation.
    pub ordering: bool,
    /// Subqueries over patient rows that decide which patients an outer cell counts.
    pub subqueries: bool,
    /// Functions that could fail on a data value run in their NULL-on-failure form.
    pub safe_functions: bool,
    /// Extreme percentile fractions count as MIN/MAX.
    pub percentiles: bool,
    /// A publication of several tables (the annual report) suppresses further cells so
    /// that no small group follows from its totals by subtraction (`disclosure::margins`).
    pub margins: bool,
}

impl Default for Defences {
    fn default() -> Self {
        Self::ALL
    }
}

impl Defences {
    /// Every defence on: the only setting outside attack-test controls.
    pub const ALL: Defences = Defences {
        differencing: true,
        ordering: true,
        subqueries: true,
        safe_functions: true,
        percentiles: true,
        margins: true,
    };

    /// Both sides' defences (a defence is on if it is on in either).
    fn either(self, o: Defences) -> Defences {
        Defences {
            differencing: self.differencing || o.differencing,
            ordering: self.ordering || o.ordering,
            subqueries: self.subqueries || o.subqueries,
            safe_functions: self.safe_functions || o.safe_functions,
            percentiles: self.percentiles || o.percentiles,
            margins: self.margins || o.margins,
        }
    }
}

impl RuleSet {
    /// No suppression at all; only for equivalence tests of the rewrite.
    pub fn off() -> Self {
        Self {
            k: 1,
            facility_k: 1,
            dominance_n: 2,
            dominance_k: 1.0,
            p_ratio: 0.0,
            rounding: None,
            defences: Defences::ALL,
        }
    }

    /// Whether the dominance rules can fail a cell: `dominance_k = 1` and `p_ratio = 0` (the
    /// ends of their validated ranges) hold for every non-negative contribution, so the check
    /// is skipped, as with [`RuleSet::off`].
    pub fn dominance_enabled(&self) -> bool {
        self.dominance_k < 1.0 || self.p_ratio > 0.0
    }

    fn stricter(&self, o: &RuleSet) -> RuleSet {
        RuleSet {
            k: self.k.max(o.k),
            facility_k: self.facility_k.max(o.facility_k),
            // Only n = 2 is computed (top-two per-patient sums); validated at load.
            dominance_n: self.dominance_n,
            dominance_k: self.dominance_k.min(o.dominance_k),
            p_ratio: self.p_ratio.max(o.p_ratio),
            rounding: match (self.rounding, o.rounding) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            defences: self.defences.either(o.defences),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Partial {
    k: Option<u32>,
    facility_k: Option<u32>,
    dominance_n: Option<u32>,
    dominance_k: Option<f64>,
    p_ratio: Option<f64>,
    rounding: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    schema_version: u32,
    defaults: Partial,
    #[serde(default)]
    dataset: BTreeMap<String, Partial>,
}

/// Disclosure rules: defaults plus per-dataset overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct DisclosureRules {
    pub defaults: RuleSet,
    pub datasets: BTreeMap<String, RuleSet>,
}

impl DisclosureRules {
    /// The rules compiled into the binary.
    pub fn embedded() -> Result<Self, RulesError> {
        Self::from_toml(EMBEDDED_RULES)
    }

    /// Load and validate a rules file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, RulesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Self, RulesError> {
        let file = parse(text)?;
        let defaults = apply(&shipped_defaults()?, &file.defaults, "[defaults]")?;
        let mut datasets = BTreeMap::new();
        for (name, p) in &file.dataset {
            datasets.insert(
                name.clone(),
                apply(&defaults, p, &format!("[dataset.{name}]"))?,
            );
        }
        Ok(Self { defaults, datasets })
    }

    /// Rules without any suppression (k = 1, no dominance, no rounding). Tests only: they
    /// show that the rewrite itself does not change numbers.
    pub fn off() -> Self {
        Self {
            defaults: RuleSet::off(),
            datasets: BTreeMap::new(),
        }
    }

    /// Raise k (an approval may demand a higher threshold than the policy); never lowers it.
    pub fn with_threshold(mut self, k: u32) -> Self {
        self.defaults.k = self.defaults.k.max(k);
        for r in self.datasets.values_mut() {
            r.k = r.k.max(k);
        }
        self
    }

    /// The same rules with these defences. Attack-test controls only: no rules file can
    /// switch a defence off.
    #[doc(hidden)]
    pub fn with_defences(mut self, d: Defences) -> Self {
        self.defaults.defences = d;
        for r in self.datasets.values_mut() {
            r.defences = d;
        }
        self
    }

    /// The rules for a query reading tables of these datasets: the strictest of each value.
    pub fn effective<'a>(&self, datasets: impl IntoIterator<Item = &'a str>) -> RuleSet {
        let mut out = self.defaults.clone();
        for d in datasets {
            if let Some(r) = self.datasets.get(d) {
                out = out.stricter(r);
            }
        }
        out
    }
}

fn parse(text: &str) -> Result<File, RulesError> {
    let file: File = toml::from_str(text)?;
    if file.schema_version != RULES_VERSION {
        return Err(RulesError::Version {
            found: file.schema_version,
        });
    }
    Ok(file)
}

/// The `[defaults]` of the shipped rules ([`EMBEDDED_RULES`]), which state every rule
/// (only `rounding` may be left out: no rounding). A rules file that leaves a key out
/// inherits it from here, so the thresholds have one source: `policies/disclosure.toml`.
fn shipped_defaults() -> Result<RuleSet, RulesError> {
    let d = parse(EMBEDDED_RULES)?.defaults;
    let missing =
        |key: &str| RulesError::Invalid(format!("[defaults] of the shipped rules must set {key}"));
    let base = RuleSet {
        k: d.k.ok_or_else(|| missing("k"))?,
        facility_k: d.facility_k.ok_or_else(|| missing("facility_k"))?,
        dominance_n: d.dominance_n.ok_or_else(|| missing("dominance_n"))?,
        dominance_k: d.dominance_k.ok_or_else(|| missing("dominance_k"))?,
        p_ratio: d.p_ratio.ok_or_else(|| missing("p_ratio"))?,
        rounding: d.rounding,
        defences: Defences::ALL,
    };
    apply(&base, &Partial::default(), "[defaults]")
}

fn apply(base: &RuleSet, p: &Partial, at: &str) -> Result<RuleSet, RulesError> {
    let r = RuleSet {
        k: p.k.unwrap_or(base.k),
        facility_k: p.facility_k.unwrap_or(base.facility_k),
        dominance_n: p.dominance_n.unwrap_or(base.dominance_n),
        dominance_k: p.dominance_k.unwrap_or(base.dominance_k),
        p_ratio: p.p_ratio.unwrap_or(base.p_ratio),
        rounding: p.rounding.or(base.rounding),
        defences: base.defences,
    };
    let bad = |m: String| Err(RulesError::Invalid(format!("{at}: {m}")));
    if r.k < 1 {
        return bad("k must be at least 1".into());
    }
    if r.facility_k < 1 {
        return bad("facility_k must be at least 1".into());
    }
    if r.dominance_n != 2 {
        return bad("dominance_n must be 2 (kura computes the two largest contributions)".into());
    }
    if !(r.dominance_k > 0.0 && r.dominance_k <= 1.0) {
        return bad("dominance_k must be in (0, 1]".into());
    }
    if !(0.0..=1.0).contains(&r.p_ratio) {
        return bad("p_ratio must be in [0, 1]".into());
    }
    if r.rounding == Some(0) {
        return bad("rounding must be at least 1; omit it for no rounding".into());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_rules_have_documented_defaults() {
        let r = DisclosureRules::embedded().unwrap();
        assert_eq!(r.defaults.k, 5);
        assert_eq!(r.defaults.facility_k, 3);
        assert_eq!(r.defaults.dominance_k, 0.9);
        assert_eq!(r.defaults.p_ratio, 0.10);
    }

    #[test]
    fn omitted_keys_take_the_shipped_defaults() {
        let shipped = DisclosureRules::embedded().unwrap().defaults;
        let r = DisclosureRules::from_toml("schema_version = 1\n[defaults]\nk = 7\n").unwrap();
        assert_eq!(r.defaults, RuleSet { k: 7, ..shipped });
    }

    #[test]
    fn dataset_override_and_strictest_wins() {
        let r = DisclosureRules::from_toml(
            "schema_version = 1\n[defaults]\nk = 5\n[dataset.nanbyo]\nk = 10\n[dataset.als]\nfacility_k = 4\n",
        )
        .unwrap();
        assert_eq!(r.effective(["als"]).k, 5);
        let both = r.effective(["nanbyo", "als"]);
        assert_eq!((both.k, both.facility_k), (10, 4));
    }

    #[test]
    fn threshold_only_rises() {
        let r = DisclosureRules::embedded().unwrap();
        assert_eq!(r.clone().with_threshold(10).defaults.k, 10);
        assert_eq!(r.with_threshold(2).defaults.k, 5);
    }

    #[test]
    fn rejects_bad_values_and_unknown_keys() {
        let e = DisclosureRules::from_toml("schema_version = 1\n[defaults]\nk = 0\n").unwrap_err();
        assert!(e.to_string().contains("k must be at least 1"), "{e}");
        assert!(DisclosureRules::from_toml("schema_version = 1\n[defaults]\nkk = 3\n").is_err());
        assert!(DisclosureRules::from_toml("schema_version = 2\n[defaults]\n").is_err());
    }
}
