//! Privacy stage, differential privacy: the noise mechanisms. Every noised quantity is one
//! vector (a column of cells over the zero-filled key domain) released with the Laplace
//! mechanism of the `opendp` crate: discrete Laplace on counts, Laplace on clamped sums.
//! OpenDP samples the noise (with its cryptographic RNG) and reports the ε of each
//! measurement through its privacy map; we never sample ourselves, and nothing is released
//! unless the map confirms the quantity's ε share for its sensitivity.
//!
//! Also here: the release threshold on a noisy patient count and the accuracy of noisy
//! values (95% half-widths, the interval of an AVG).

use opendp::core::{Measurement, MetricSpace};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::{DiscreteLaplace, MakeNoise, make_laplace};
use opendp::measures::MaxDivergence;
use opendp::metrics::L1Distance;
use opendp::traits::CheckAtom;

use crate::query::QueryError;

/// Probability that a group with fewer than k patients passes the release threshold.
pub const THRESHOLD_FAILURE: f64 = 0.01;

/// Name of the mechanism in results and the audit log.
pub const MECHANISM: &str = "laplace";

/// One noised quantity: its L1 sensitivity, ε share and Laplace scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noise {
    pub sensitivity: f64,
    pub epsilon: f64,
    pub scale: f64,
}

impl Noise {
    /// Scale for `sensitivity` at `epsilon`.
    pub fn new(sensitivity: f64, epsilon: f64) -> Result<Self, QueryError> {
        if !(epsilon.is_finite() && epsilon > 0.0 && sensitivity.is_finite() && sensitivity > 0.0) {
            return Err(QueryError::internal(
                "dp mechanism",
                format!("invalid noise parameters: sensitivity {sensitivity}, epsilon {epsilon}"),
            ));
        }
        Ok(Self {
            sensitivity,
            epsilon,
            scale: sensitivity / epsilon,
        })
    }

    /// Half-width t of the 95% interval: P(|Laplace(b)| > t) = exp(-t / b) = 0.05.
    pub fn ci95_half_width(&self) -> f64 {
        self.scale * 20f64.ln()
    }

    /// Half-width at confidence 1 - alpha.
    pub fn half_width(&self, alpha: f64) -> f64 {
        self.scale * (1.0 / alpha).ln()
    }
}

/// The release threshold τ for a noisy patient count of scale `b`: a group with at most
/// k − 1 patients passes with probability at most [`THRESHOLD_FAILURE`], because
/// P(Laplace(b) ≥ 1 + b·ln(1 / (2β))) ≤ β.
pub fn release_threshold(k: u32, gate: &Noise) -> f64 {
    f64::from(k) + gate.scale * (1.0 / (2.0 * THRESHOLD_FAILURE)).ln()
}

/// OpenDP's Laplace measurement over a vector of cells, with L1 distance between vectors.
type VectorLaplace<T> =
    Measurement<VectorDomain<AtomDomain<T>>, L1Distance<T>, MaxDivergence, Vec<T>>;

/// Refuse a charge above what was allotted to it, with a relative tolerance for the
/// rounding of ε shares. `charged` and `limit` name both in the internal message.
pub(super) fn within(
    spent: f64,
    allotted: f64,
    stage: &'static str,
    charged: &str,
    limit: &str,
) -> Result<f64, QueryError> {
    if spent > allotted * (1.0 + 1e-9) {
        return Err(QueryError::internal(
            stage,
            format!("{charged} {spent} above the {limit} {allotted}"),
        ));
    }
    Ok(spent)
}

/// The Laplace mechanism over cells of `domain` at `noise`'s scale, and the ε OpenDP's
/// privacy map charges at input distance `d_in` (the quantity's sensitivity), confirmed
/// within the ε share of `noise`.
fn laplace<T: CheckAtom>(
    domain: AtomDomain<T>,
    d_in: T,
    noise: &Noise,
) -> Result<(VectorLaplace<T>, f64), QueryError>
where
    DiscreteLaplace: MakeNoise<VectorDomain<AtomDomain<T>>, L1Distance<T>, MaxDivergence>,
    (VectorDomain<AtomDomain<T>>, L1Distance<T>): MetricSpace,
{
    let m = make_laplace::<_, _, MaxDivergence>(
        VectorDomain::new(domain),
        L1Distance::<T>::default(),
        noise.scale,
        None,
    )
    .map_err(|e| QueryError::internal("dp mechanism", e))?;
    let spent = m
        .map(&d_in)
        .map_err(|e| QueryError::internal("dp mechanism", e))?;
    let spent = within(
        spent,
        noise.epsilon,
        "dp mechanism",
        "privacy map reports ε",
        "allotted",
    )?;
    Ok((m, spent))
}

/// Discrete Laplace on integer counts; integer sensitivities are whole numbers of rows
/// or patients.
fn count_laplace(noise: &Noise) -> Result<(VectorLaplace<i64>, f64), QueryError> {
    laplace(
        AtomDomain::<i64>::default(),
        noise.sensitivity.ceil() as i64,
        noise,
    )
}

/// Laplace on real-valued sums (OpenDP's float Laplace, sampled exactly on a fine grid).
fn sum_laplace(noise: &Noise) -> Result<(VectorLaplace<f64>, f64), QueryError> {
    laplace(AtomDomain::<f64>::new_non_nan(), noise.sensitivity, noise)
}

/// Run a priced measurement on `values`: the noisy values and the ε charged.
fn invoke<T: CheckAtom>(
    (m, spent): (VectorLaplace<T>, f64),
    values: &[T],
) -> Result<(Vec<T>, f64), QueryError> {
    let out = m
        .invoke(&values.to_vec())
        .map_err(|e| QueryError::internal("dp mechanism", e))?;
    Ok((out, spent))
}

/// The ε OpenDP's privacy map charges for a vector of counts noised with `noise`, once
/// confirmed within its share. Reads no data: this is the price before the release.
pub fn count_map(noise: &Noise) -> Result<f64, QueryError> {
    Ok(count_laplace(noise)?.1)
}

/// The ε OpenDP's privacy map charges for a vector of sums noised with `noise`, once
/// confirmed within its share.
pub fn sum_map(noise: &Noise) -> Result<f64, QueryError> {
    Ok(sum_laplace(noise)?.1)
}

/// Add discrete Laplace noise to integer counts. Returns the noisy values and the ε the
/// privacy map charges for `noise.sensitivity`.
pub fn noisy_counts(values: &[i64], noise: &Noise) -> Result<(Vec<i64>, f64), QueryError> {
    invoke(count_laplace(noise)?, values)
}

/// Add Laplace noise to real-valued sums. Returns the noisy values and the ε charged.
pub fn noisy_sums(values: &[f64], noise: &Noise) -> Result<(Vec<f64>, f64), QueryError> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(QueryError::internal("dp mechanism", "non-finite sum"));
    }
    invoke(sum_laplace(noise)?, values)
}

/// A 95% interval for AVG = mid + S / N from a noisy centred sum S (noise `s`) and a noisy
/// count N (noise `n`): each is bounded at 97.5% (so both hold with 95%), and the ratio is
/// taken over the corners of that box, clamped to `[lo, hi]`. If the count's interval
/// reaches zero the whole clamp range is returned.
pub fn avg_interval(sum: f64, count: f64, s: &Noise, n: &Noise, lo: f64, hi: f64) -> (f64, f64) {
    let hs = s.half_width(0.025);
    let hn = n.half_width(0.025);
    let mid = (lo + hi) / 2.0;
    if count - hn <= 0.0 {
        return (lo, hi);
    }
    let corners = [
        (sum - hs) / (count - hn),
        (sum - hs) / (count + hn),
        (sum + hs) / (count - hn),
        (sum + hs) / (count + hn),
    ];
    let a = corners.iter().copied().fold(f64::INFINITY, f64::min);
    let b = corners.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    ((mid + a).clamp(lo, hi), (mid + b).clamp(lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_sensitivity_over_epsilon_and_the_map_agrees() {
        let n = Noise::new(5.0, 0.25).unwrap();
        assert_eq!(n.scale, 20.0);
        let (out, spent) = noisy_counts(&[10, 20, 30], &n).unwrap();
        assert_eq!(out.len(), 3);
        assert!((spent - 0.25).abs() < 1e-12, "{spent}");
        let (_, spent) = noisy_sums(&[1.5, 2.5], &Noise::new(48.0, 0.1).unwrap()).unwrap();
        assert!((spent - 0.1).abs() < 1e-12, "{spent}");
    }

    #[test]
    fn invalid_parameters_are_refused() {
        assert!(Noise::new(1.0, 0.0).is_err());
        assert!(Noise::new(0.0, 1.0).is_err());
        assert!(Noise::new(1.0, f64::NAN).is_err());
        assert!(noisy_sums(&[f64::INFINITY], &Noise::new(1.0, 1.0).unwrap()).is_err());
    }

    #[test]
    fn threshold_passes_small_groups_rarely() {
        let gate = Noise::new(1.0, 1.0).unwrap();
        let tau = release_threshold(5, &gate);
        // 5 + ln 50 ≈ 8.91
        assert!((tau - (5.0 + 50f64.ln())).abs() < 1e-12);
        let (noisy, _) = noisy_counts(&vec![4; 20_000], &gate).unwrap();
        let passed = noisy.iter().filter(|&&v| v as f64 >= tau).count();
        assert!(passed < 20_000 / 100 + 60, "{passed} of 20000 passed");
    }

    #[test]
    fn avg_interval_contains_the_estimate_and_stays_in_bounds() {
        let s = Noise::new(24.0, 0.5).unwrap();
        let n = Noise::new(1.0, 0.5).unwrap();
        let (a, b) = avg_interval(-400.0, 100.0, &s, &n, 0.0, 48.0);
        let est = 24.0 + -400.0 / 100.0;
        assert!(
            a <= est && est <= b && 0.0 <= a && b <= 48.0,
            "{a} {est} {b}"
        );
        assert_eq!(avg_interval(10.0, 2.0, &s, &n, 0.0, 48.0), (0.0, 48.0));
    }
}
