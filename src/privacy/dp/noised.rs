//! Privacy stage, differential privacy: running a [`Release`] over the exact bounded
//! quantities of every group of the key domain. Each quantity is noised once, as one
//! vector, by OpenDP (whose privacy map confirms its share again), the charges must add
//! up to at most ε, and a row is released only if its noisy patient count reaches the
//! threshold. Everything read from the result afterwards (cells, AVG estimates and
//! intervals) is computed from noisy values only.

use super::mechanism::{Noise, avg_interval, noisy_counts, noisy_sums};
use super::release::{MeasureNoise, Release};
use crate::query::QueryError;

/// The exact bounded quantities of one group, as the bounded plan computed them.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactCell {
    /// Per measure: its value (count as f64, or sum) and, for AVG, its count.
    pub values: Vec<(f64, f64)>,
    /// The (patient, group) pairs kept: the patient count behind the threshold.
    pub patients: f64,
}

impl ExactCell {
    /// A group no patient contributes to.
    pub fn empty(measures: usize) -> Self {
        Self {
            values: vec![(0.0, 0.0); measures],
            patients: 0.0,
        }
    }
}

/// The noisy quantities of every row of the key domain, and which rows passed the
/// threshold.
#[derive(Debug)]
pub struct Noised<'a> {
    release: &'a Release,
    /// Per measure, per row: the noisy value (count, sum or centred sum).
    values: Vec<Vec<f64>>,
    /// Per measure, per row: the noisy count of an AVG (empty for other measures).
    counts: Vec<Vec<f64>>,
    passed: Vec<bool>,
}

impl Release {
    /// Noise `cells` (one per row of the key domain) and apply the release threshold.
    pub fn run(&self, cells: &[ExactCell]) -> Result<Noised<'_>, QueryError> {
        let mut spent = 0.0;
        let mut values = Vec::with_capacity(self.measures.len());
        let mut counts_of_avg = Vec::with_capacity(self.measures.len());
        for (j, m) in self.measures.iter().enumerate() {
            let exact_count = |c: &ExactCell| c.values[j].0 as i64;
            let exact_sum = |c: &ExactCell| c.values[j].0;
            match m {
                MeasureNoise::Count(n) => {
                    values.push(noisy_vector(cells, exact_count, counts, n, &mut spent)?);
                    counts_of_avg.push(Vec::new());
                }
                MeasureNoise::Sum(n) => {
                    values.push(noisy_vector(cells, exact_sum, noisy_sums, n, &mut spent)?);
                    counts_of_avg.push(Vec::new());
                }
                MeasureNoise::Avg { sum, count, .. } => {
                    values.push(noisy_vector(cells, exact_sum, noisy_sums, sum, &mut spent)?);
                    let exact = |c: &ExactCell| c.values[j].1 as i64;
                    counts_of_avg.push(noisy_vector(cells, exact, counts, count, &mut spent)?);
                }
            }
        }
        let gate = match self.gate_measure {
            Some(j) => values[j].clone(),
            None => {
                let exact = |c: &ExactCell| c.patients as i64;
                noisy_vector(cells, exact, counts, &self.gate, &mut spent)?
            }
        };
        self.within_budget(spent)?;
        let passed = gate.iter().map(|g| *g >= self.threshold).collect();
        Ok(Noised {
            release: self,
            values,
            counts: counts_of_avg,
            passed,
        })
    }
}

/// [`noisy_counts`] with the noisy counts as reals, like the other quantities.
fn counts(v: &[i64], noise: &Noise) -> Result<(Vec<f64>, f64), QueryError> {
    let (out, e) = noisy_counts(v, noise)?;
    Ok((out.into_iter().map(|x| x as f64).collect(), e))
}

/// The exact value of every cell through `mechanism`, charging `spent`.
fn noisy_vector<T>(
    cells: &[ExactCell],
    exact: impl Fn(&ExactCell) -> T,
    mechanism: impl Fn(&[T], &Noise) -> Result<(Vec<f64>, f64), QueryError>,
    noise: &Noise,
    spent: &mut f64,
) -> Result<Vec<f64>, QueryError> {
    let v: Vec<T> = cells.iter().map(exact).collect();
    let (out, e) = mechanism(&v, noise)?;
    *spent += e;
    Ok(out)
}

impl Noised<'_> {
    /// The released value of measure `j` in row `r`: the noisy count or sum, or the AVG
    /// estimate; `None` when the cell is withheld (the row failed the threshold, or an
    /// AVG's noisy count is below one).
    pub fn cell(&self, j: usize, r: usize) -> Option<f64> {
        if !self.passed[r] {
            return None;
        }
        match self.release.measures[j] {
            MeasureNoise::Count(_) | MeasureNoise::Sum(_) => Some(self.values[j][r]),
            MeasureNoise::Avg { lo, hi, .. } => {
                let (s, c) = (self.values[j][r], self.counts[j][r]);
                (c >= 1.0).then(|| ((lo + hi) / 2.0 + s / c).clamp(lo, hi))
            }
        }
    }

    /// Whether the cell of measure `j` in row `r` is withheld.
    pub fn withheld(&self, j: usize, r: usize) -> bool {
        self.cell(j, r).is_none()
    }

    /// The 95% interval of a released AVG cell (see [`avg_interval`]).
    pub fn interval(&self, j: usize, r: usize) -> Option<(f64, f64)> {
        let MeasureNoise::Avg { sum, count, lo, hi } = self.release.measures[j] else {
            return None;
        };
        self.cell(j, r)?;
        let (s, c) = (self.values[j][r], self.counts[j][r]);
        Some(avg_interval(s, c, &sum, &count, lo, hi))
    }
}
