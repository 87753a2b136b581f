//! Privacy stage, differential privacy: the release as a value. [`make_release`] turns a
//! DP plan, its contribution bounds, ε and k into a [`Release`] before any patient data is
//! read: every noised quantity with its sensitivity, ε share and Laplace scale, the release
//! threshold, and its privacy map. The release is pure ε-DP by sequential composition: ε
//! is split equally over the noised quantities (one per COUNT, COUNT(DISTINCT pid) and
//! SUM, two per AVG, one for the threshold's patient count unless an unfiltered
//! COUNT(DISTINCT pid) doubles as it), each gets scale `b = Δ / ε_i`, and OpenDP's privacy
//! map must confirm every share, and their total within ε, when the value is built and
//! again when it is run. The preview and the cache key are read from this value, and the
//! run noises exactly what it describes (see `noised`).

use datafusion::logical_expr::LogicalPlan;

use super::mechanism::{MECHANISM, Noise, count_map, release_threshold, sum_map, within};
use super::sensitivity;
use crate::privacy::result::{DpBounds, DpColumn, DpDisclosure};
use crate::query::QueryError;
use crate::sql::rewrite::dp::{DpPlan, Measure, MeasureKind};

/// Version of the DP release procedure; part of the cache key so that a change of
/// procedure never re-releases answers computed by an older one.
const PROCEDURE: &str = "kura-dp-1";

/// How one measure is noised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeasureNoise {
    /// Discrete Laplace on a count (COUNT, COUNT(DISTINCT pid)).
    Count(Noise),
    /// Laplace on a clamped sum.
    Sum(Noise),
    /// Laplace on the centred sum and discrete Laplace on the count it is divided by; the
    /// estimate is the midpoint of `[lo, hi]` plus their ratio, clamped to `[lo, hi]`.
    Avg {
        sum: Noise,
        count: Noise,
        lo: f64,
        hi: f64,
    },
}

impl MeasureNoise {
    /// The noise of the measure's value: its count, sum or centred sum.
    pub fn value(&self) -> &Noise {
        match self {
            Self::Count(n) | Self::Sum(n) | Self::Avg { sum: n, .. } => n,
        }
    }

    /// The noise of the count inside an AVG.
    pub fn count(&self) -> Option<&Noise> {
        match self {
            Self::Avg { count, .. } => Some(count),
            _ => None,
        }
    }
}

/// A DP release, priced: what will be noised and how, before anything is noised.
#[derive(Debug, Clone)]
pub struct Release {
    /// One per measure of the plan, in order.
    pub measures: Vec<MeasureNoise>,
    /// The patient count behind the release threshold.
    pub gate: Noise,
    /// The measure whose noisy value is that patient count (then `gate` is its noise and
    /// costs no share of its own).
    pub gate_measure: Option<usize>,
    /// Rows whose noisy patient count is below this are withheld.
    pub threshold: f64,
    /// The total ε, as requested.
    pub epsilon: f64,
    /// The bounds as requested (part of the cache key).
    pub requested: DpBounds,
    /// The bounds as enforced: an ungrouped query has one group per patient.
    pub bounds: DpBounds,
    /// The regulation's minimum cell size behind the threshold.
    pub k: u32,
}

/// The bounds the bounded plan enforces: the requested ones, where the data proves no
/// less (an ungrouped query, or keys that depend on the patient only, put a patient in
/// one group; a one-row-per-patient table gives it one row).
pub fn effective_bounds(dp: &DpPlan, bounds: DpBounds) -> DpBounds {
    DpBounds {
        max_groups_per_patient: if dp.keys.is_empty() || dp.shape.one_group {
            1
        } else {
            bounds.max_groups_per_patient
        },
        max_rows_per_group: if dp.shape.one_row {
            1
        } else {
            bounds.max_rows_per_group
        },
    }
}

/// Build and price the release of `dp` under `bounds` at total `epsilon`, with the
/// threshold for minimum cell size `k`.
pub fn make_release(
    dp: &DpPlan,
    bounds: DpBounds,
    epsilon: f64,
    k: u32,
) -> Result<Release, QueryError> {
    let effective = effective_bounds(dp, bounds);
    let shares: usize = dp
        .measures
        .iter()
        .map(|m| if m.kind == MeasureKind::Avg { 2 } else { 1 })
        .sum::<usize>()
        + usize::from(dp.gate_measure.is_none());
    let eps_i = epsilon / shares as f64;
    let measures = dp
        .measures
        .iter()
        .map(|m| measure_noise(m, effective, eps_i))
        .collect::<Result<Vec<_>, _>>()?;
    let gate = match dp.gate_measure {
        Some(j) => *measures[j].value(),
        None => Noise::new(sensitivity::distinct_patients(effective), eps_i)?,
    };
    let release = Release {
        measures,
        gate,
        gate_measure: dp.gate_measure,
        threshold: release_threshold(k, &gate),
        epsilon,
        requested: bounds,
        bounds: effective,
        k,
    };
    release.privacy_map()?;
    Ok(release)
}

/// The noise of one measure at ε share `eps_i` under the enforced bounds.
fn measure_noise(m: &Measure, b: DpBounds, eps_i: f64) -> Result<MeasureNoise, QueryError> {
    let (lo, hi) = m.clamp.unwrap_or((0.0, 0.0));
    Ok(match m.kind {
        MeasureKind::Count => MeasureNoise::Count(Noise::new(sensitivity::count(b), eps_i)?),
        MeasureKind::CountDistinctPid => {
            MeasureNoise::Count(Noise::new(sensitivity::distinct_patients(b), eps_i)?)
        }
        MeasureKind::Sum => MeasureNoise::Sum(Noise::new(sensitivity::sum(b, lo, hi), eps_i)?),
        MeasureKind::Avg => MeasureNoise::Avg {
            sum: Noise::new(sensitivity::centred_sum(b, lo, hi), eps_i)?,
            count: Noise::new(sensitivity::count(b), eps_i)?,
            lo,
            hi,
        },
    })
}

impl Release {
    /// The privacy map of the whole release: the ε OpenDP's maps charge for all noised
    /// quantities, each confirmed within its share and the total within ε.
    pub fn privacy_map(&self) -> Result<f64, QueryError> {
        let mut total = 0.0;
        for m in &self.measures {
            total += match m {
                MeasureNoise::Count(n) => count_map(n)?,
                MeasureNoise::Sum(n) | MeasureNoise::Avg { sum: n, .. } => sum_map(n)?,
            };
            if let Some(c) = m.count() {
                total += count_map(c)?;
            }
        }
        if self.gate_measure.is_none() {
            total += count_map(&self.gate)?;
        }
        self.within_budget(total)
    }

    /// Refuse a composition that charges more than the requested ε.
    pub(super) fn within_budget(&self, spent: f64) -> Result<f64, QueryError> {
        within(
            spent,
            self.epsilon,
            "dp release",
            "composition spent",
            "requested",
        )
    }

    /// Number of noised quantities ε is split over.
    pub fn shares(&self) -> usize {
        self.measures
            .iter()
            .map(|x| 1 + usize::from(x.count().is_some()))
            .sum::<usize>()
            + usize::from(self.gate_measure.is_none())
    }

    /// The sensitivity of every quantity, in the order of `query::dp::exact_quantities`:
    /// each measure's value (and AVG count), then the threshold's patient count.
    pub fn sensitivities(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for m in &self.measures {
            out.push(m.value().sensitivity);
            if let Some(c) = m.count() {
                out.push(c.sensitivity);
            }
        }
        out.push(self.gate.sensitivity);
        out
    }

    /// SHA-256 over the procedure version, the normalised plan with its constants, the DP
    /// parameters and k: the same question asked the same way, answered from the cache.
    pub fn key(&self, plan: &LogicalPlan) -> String {
        let text = format!(
            "{PROCEDURE}\n{}\nepsilon={:016x}\nL={}\nm={}\nk={}",
            plan.display_indent(),
            self.epsilon.to_bits(),
            self.requested.max_groups_per_patient,
            self.requested.max_rows_per_group,
            self.k
        );
        hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
    }

    /// The price of the release as the preview shows it: ε, bounds, threshold and, for
    /// every output column of `dp` that shows a noisy measure as it is, its ε share,
    /// sensitivity, scale and accuracy. Intervals are added by the run.
    pub fn price(&self, dp: &DpPlan) -> DpDisclosure {
        let ngroup = dp.keys.len();
        let fields = dp.top.schema().fields();
        let columns = dp
            .passes
            .iter()
            .enumerate()
            .filter_map(|(c, pass)| {
                let j = pass.filter(|&a| a >= ngroup)? - ngroup;
                Some(self.column(c, fields[c].name(), &dp.measures[j], j))
            })
            .collect();
        DpDisclosure {
            epsilon: self.epsilon,
            cached: false,
            mechanism: MECHANISM.into(),
            bounds: self.bounds,
            release_threshold: self.threshold,
            columns,
            intervals: Vec::new(),
        }
    }

    /// The preview of output column `index`, which shows measure `j` unchanged.
    fn column(&self, index: usize, name: &str, m: &Measure, j: usize) -> DpColumn {
        let n = &self.measures[j];
        let value = n.value();
        DpColumn {
            index,
            name: name.to_string(),
            aggregate: m.kind.name().into(),
            epsilon: value.epsilon + n.count().map_or(0.0, |x| x.epsilon),
            sensitivity: value.sensitivity,
            noise_scale: value.scale,
            ci95_half_width: (m.kind != MeasureKind::Avg).then(|| value.ci95_half_width()),
            clamp: m.clamp.map(|(lo, hi)| [lo, hi]),
        }
    }

    /// The note that explains the release to the researcher.
    pub fn note(&self) -> String {
        format!(
            "Differential privacy: ε = {eps} spent over {shares} noised quantities (Laplace); each patient counts in at most {l} group(s) and {m} row(s) per group; rows whose noisy patient count is below {tau:.1} are suppressed (the <{k} rule). / 差分プライバシー: ε = {eps} を {shares} 個の量に配分しラプラスノイズを加えました。患者 1 人あたり最大 {l} グループ・各 {m} 行まで集計し、ノイズ付き患者数が {tau:.1} 未満の行は秘匿しました（{k} 未満ルール）。",
            eps = self.epsilon,
            shares = self.shares(),
            l = self.bounds.max_groups_per_patient,
            m = self.bounds.max_rows_per_group,
            tau = self.threshold,
            k = self.k,
        )
    }
}
