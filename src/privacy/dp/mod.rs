//! Privacy stage, differential privacy: the noise mechanisms and their accounting, in the
//! spirit of OpenDP's constructors. A DP release is built once as a value
//! ([`make_release`] → [`Release`]) that holds every noised quantity with its sensitivity,
//! ε share and Laplace scale, the release threshold and the privacy map; the preview
//! prices it, the cache key is derived from it, and the run ([`Release::run`]) noises
//! exactly what it describes.
//!
//! - `mechanism`: OpenDP's Laplace mechanisms, the release threshold, accuracy;
//! - `sensitivity`: the L1 sensitivities under the contribution bounds of the DP rewrite;
//! - `release`: the release value, its constructor, price, cache key and note;
//! - `noised`: running the release over the exact quantities of the key domain.

mod mechanism;
mod noised;
mod release;
pub mod sensitivity;

pub use mechanism::{
    MECHANISM, Noise, THRESHOLD_FAILURE, avg_interval, count_map, noisy_counts, noisy_sums,
    release_threshold, sum_map,
};
pub use noised::{ExactCell, Noised};
pub use release::{MeasureNoise, Release, make_release};
