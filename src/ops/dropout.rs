//! Dropout as the paper writes it (§4.2): in training each unit's output is zeroed with
//! probability `p` and the survivors are *not* rescaled; at test time every output is multiplied
//! by `1 - p` (0.5 in the paper).
//!
//! The mask is never stored: unit `(sample, unit)` is kept iff
//! `uniform(word(seed, stream, sample * units_total + unit_offset + unit)) >= p` (see `philox`).
//! Indexing by the unit's place in the *whole* layer (`unit_offset` is the tower's first unit)
//! gives a two-tower layer exactly the mask of the same layer held as one tensor, and the
//! backward pass regenerates the mask instead of reading it back.

use super::philox;
use crate::tensor::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutGeom {
    /// Samples in the batch.
    pub n: usize,
    /// Units of this tower's slice, per sample.
    pub units: usize,
    /// Units of the whole layer, per sample.
    pub units_total: usize,
    /// Index of this slice's first unit within the whole layer.
    pub unit_offset: usize,
    /// Probability of dropping a unit.
    pub p: f32,
    pub seed: u64,
    /// Names this use of the generator (layer and step), so every use draws fresh masks.
    pub stream: u64,
}

impl DropoutGeom {
    pub fn len(&self) -> usize {
        self.n * self.units
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn keep(&self, sample: usize, unit: usize) -> bool {
        let index = sample * self.units_total + self.unit_offset + unit;
        philox::uniform(philox::word(self.seed, self.stream, index as u64)) >= self.p
    }
    fn check(&self, lens: &[usize]) {
        assert!(
            self.unit_offset + self.units <= self.units_total,
            "dropout: {self:?}"
        );
        assert!(
            (0.0..1.0).contains(&self.p),
            "dropout: p must be in [0, 1): {self:?}"
        );
        for &l in lens {
            assert_eq!(l, self.len(), "dropout: buffer length for {self:?}");
        }
    }
}

/// Training forward: `y = x` where kept, else 0.
pub fn forward_train_naive<T: Real>(g: &DropoutGeom, x: &[T], y: &mut [T]) {
    g.check(&[x.len(), y.len()]);
    for s in 0..g.n {
        for u in 0..g.units {
            let i = s * g.units + u;
            y[i] = if g.keep(s, u) { x[i] } else { T::zero() };
        }
    }
}

/// Backward of the training forward: `dx = dy` where kept, else 0.
pub fn backward_naive<T: Real>(g: &DropoutGeom, dy: &[T], dx: &mut [T]) {
    forward_train_naive(g, dy, dx)
}

/// Test-time forward: `y = (1 - p) · x`.
pub fn forward_test<T: Real>(p: f32, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len());
    let scale = T::from_f64_lossy(1.0 - p as f64);
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * scale;
    }
}

// Fast CPU paths, parallel over samples. A sample's units draw consecutive words of the stream,
// so one Philox block serves four units (`keep` evaluates a whole block per unit).

/// `y = x` where kept, else 0, for one sample `s`: the mask `keep(s, u)` defines.
fn mask_sample<T: Real>(g: &DropoutGeom, s: usize, xs: &[T], ys: &mut [T]) {
    let first = (s * g.units_total + g.unit_offset) as u64;
    let mut words = (u64::MAX, [0u32; 4]);
    for (u, (y, &x)) in ys.iter_mut().zip(xs).enumerate() {
        let index = first + u as u64;
        if words.0 != index / 4 {
            words = (index / 4, philox::block(g.seed, g.stream, index / 4));
        }
        let kept = philox::uniform(words.1[(index % 4) as usize]) >= g.p;
        *y = if kept { x } else { T::zero() };
    }
}

/// Fast training forward (same mask as `forward_train_naive`).
pub fn forward_train<T: Real>(g: &DropoutGeom, x: &[T], y: &mut [T]) {
    g.check(&[x.len(), y.len()]);
    if g.units == 0 {
        return;
    }
    y.par_chunks_mut(g.units)
        .zip(x.par_chunks(g.units))
        .enumerate()
        .for_each(|(s, (ys, xs))| mask_sample(g, s, xs, ys));
}

/// Fast backward: `dx = dy` where kept, else 0.
pub fn backward<T: Real>(g: &DropoutGeom, dy: &[T], dx: &mut [T]) {
    forward_train(g, dy, dx)
}
