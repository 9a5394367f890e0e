//! Seeded random inputs for the op tests, and the f64 views their references compare in.

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `len` values uniform in `[lo, hi)`.
pub fn uniform(rng: &mut StdRng, len: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

/// `len` values uniform in `[lo, hi)`, rounded to f32 (so an f64 reference sees the same inputs).
pub fn uniform_f32(rng: &mut StdRng, len: usize, lo: f64, hi: f64) -> Vec<f32> {
    uniform(rng, len, lo, hi)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// `len` distinct values in `[-1, 1)`, pairwise at least `2 / len` apart, in random order: max
/// pooling's argmax cannot flip under a perturbation much smaller than that gap.
pub fn distinct(rng: &mut StdRng, len: usize) -> Vec<f64> {
    let mut v: Vec<f64> = (0..len)
        .map(|i| -1.0 + 2.0 * i as f64 / len as f64)
        .collect();
    v.shuffle(rng);
    v
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Root mean square, the scale a tolerance floor is set against.
pub fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt()
}
