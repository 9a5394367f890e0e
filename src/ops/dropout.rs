//! Dropout as the paper writes it (§4.2): in training each unit's output is zeroed with
//! probability `p` and the survivors are *not* rescaled; at test time every output is multiplied
//! by `1 - p` (0.5 in the paper).
//!
//! The mask is never stored: unit `(sample, unit)` is kept iff
//! `uniform(word(seed, stream, (first_sample + sample) * units_total + unit_offset + unit)) >= p`
//! (see `philox`). Indexing by the unit's place in the *whole* layer (`unit_offset` is the
//! tower's first unit) gives a two-tower layer exactly the mask of the same layer held as one
//! tensor; indexing by the sample's place in the *whole* batch (`first_sample` is a data-parallel
//! replica's first) gives a replica exactly the masks its samples get in one undivided run. The
//! backward pass regenerates the mask instead of reading it back.

use super::philox;
use crate::tensor::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutGeom {
    /// Samples in the batch.
    pub n: usize,
    /// The batch's first sample's index in the global batch it is a slice of (0 without
    /// data-parallel replicas).
    pub first_sample: usize,
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
        let index = (self.first_sample + sample) * self.units_total + self.unit_offset + unit;
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
    let first = ((g.first_sample + s) * g.units_total + g.unit_offset) as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(n: usize, units: usize, units_total: usize, unit_offset: usize) -> DropoutGeom {
        DropoutGeom {
            first_sample: 0,
            n,
            units,
            units_total,
            unit_offset,
            p: 0.5,
            seed: 42,
            stream: 7,
        }
    }

    /// The training forward of all-ones: the mask itself.
    fn mask(g: &DropoutGeom) -> Vec<f32> {
        let mut y = vec![0.0; g.len()];
        forward_train(g, &vec![1.0; g.len()], &mut y);
        y
    }

    #[test]
    fn same_seed_and_stream_give_the_same_mask() {
        let g = geom(4, 300, 300, 0);
        let m = mask(&g);
        assert_eq!(m, mask(&g));
        let mut naive = vec![0.0; g.len()];
        forward_train_naive(&g, &vec![1.0f32; g.len()], &mut naive);
        assert_eq!(m, naive);
        // Another stream (the next step) or seed draws a different mask: about half the units
        // disagree; 1,200 units make fewer than a quarter a 17-sigma event.
        for other in [
            DropoutGeom { stream: 8, ..g },
            DropoutGeom { seed: 43, ..g },
        ] {
            let differ = m
                .iter()
                .zip(mask(&other))
                .filter(|(a, b)| **a != *b)
                .count();
            assert!(differ > g.len() / 4, "{differ} of {} differ", g.len());
        }
    }

    #[test]
    fn two_towers_draw_exactly_the_whole_layers_mask() {
        // 23 units per sample split 10 + 13: the split and the rows fall mid Philox block.
        let (n, a, b) = (5, 10, 13);
        let whole = mask(&geom(n, a + b, a + b, 0));
        let tower_a = mask(&geom(n, a, a + b, 0));
        let tower_b = mask(&geom(n, b, a + b, a));
        for s in 0..n {
            assert_eq!(
                whole[s * (a + b)..s * (a + b) + a],
                tower_a[s * a..(s + 1) * a]
            );
            assert_eq!(
                whole[s * (a + b) + a..(s + 1) * (a + b)],
                tower_b[s * b..(s + 1) * b]
            );
        }
        // And the backward regenerates that mask.
        let g = geom(n, b, a + b, a);
        let mut dx = vec![0.0; g.len()];
        backward(&g, &vec![1.0f32; g.len()], &mut dx);
        assert_eq!(dx, tower_b);
    }

    #[test]
    fn a_slice_of_the_batch_draws_the_global_batchs_masks() {
        // Samples 4.. of a batch of 6, as a data-parallel replica takes them.
        let (n, units, first) = (6, 10, 4);
        let whole = mask(&geom(n, units, 2 * units, units));
        let part = DropoutGeom {
            n: n - first,
            first_sample: first,
            ..geom(n, units, 2 * units, units)
        };
        assert_eq!(mask(&part), whole[first * units..]);
        let mut naive = vec![0.0; part.len()];
        forward_train_naive(&part, &vec![1.0f32; part.len()], &mut naive);
        assert_eq!(naive, whole[first * units..]);
        // Without the offset the slice draws the first rows' masks instead.
        let unplaced = DropoutGeom {
            first_sample: 0,
            ..part
        };
        assert_ne!(mask(&unplaced), whole[first * units..]);
    }

    #[test]
    fn keep_rate_is_one_minus_p() {
        // N = 200,000 units: the kept fraction has standard deviation √(p(1−p)/N) ≤ 0.0012; the
        // 24-bit uniform moves the keep probability by under 6e-8. Bound: 5 sigma, 0.006.
        for p in [0.5, 0.2, 0.9] {
            let g = DropoutGeom {
                p,
                ..geom(100, 2000, 2000, 0)
            };
            let kept = mask(&g).iter().filter(|&&v| v == 1.0).count();
            let rate = kept as f64 / g.len() as f64;
            assert!(
                (rate - (1.0 - p as f64)).abs() < 0.006,
                "p = {p}: kept {rate}"
            );
        }
    }

    #[test]
    fn test_forward_scales_by_one_minus_p() {
        let x: Vec<f32> = (0..50).map(|i| i as f32 * 0.37 - 9.0).collect();
        let mut y = vec![0.0; x.len()];
        forward_test(0.5, &x, &mut y);
        // Halving is exact.
        assert!(x.iter().zip(&y).all(|(x, y)| *y == x / 2.0));
        forward_test(0.25, &x, &mut y);
        assert!(x.iter().zip(&y).all(|(x, y)| *y == x * 0.75));
        // 1 − p for a p not exact in binary: computed in f64 and rounded once, so within an ulp.
        forward_test(0.3, &x, &mut y);
        assert!(
            x.iter()
                .zip(&y)
                .all(|(x, y)| (y - x * 0.7).abs() <= x.abs() * 2e-7)
        );
    }
}
