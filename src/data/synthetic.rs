//! A built-in dataset drawn procedurally from a seed, for runs without data files: ten classes of
//! patterns (stripes three ways, disc, ring, square, cross, checkerboard, triangle, gradient),
//! each image with its own random colours, position, size, frequency and phase, plus pixel
//! noise. Colour carries no class information, so a model has to learn shapes and textures; a
//! small conv net gets well above chance within a minute of CPU time.
//!
//! Images are drawn at any size (coordinates are fractions of the side); 32×32 is the intended
//! one. Sample `i` has label `i / per_class`. The training and validation splits draw from
//! disjoint Philox streams.

use crate::ops::philox;

/// Class names, in label order.
pub const CLASSES: [&str; 10] = [
    "horizontal-stripes",
    "vertical-stripes",
    "diagonal-stripes",
    "disc",
    "ring",
    "square",
    "cross",
    "checkerboard",
    "triangle",
    "gradient",
];

/// Names the synthetic images' Philox stream: this tag in the high half, then the split bit and
/// the sample index.
const STREAM_SYNTHETIC: u64 = 0xDA7A_0003 << 32;
/// Words per image spent on its parameters; the pixel noise uses the words after these.
const PARAMETER_WORDS: u64 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// The synthetic dataset's recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synthetic {
    pub seed: u64,
    pub split: Split,
    /// Images per class.
    pub per_class: usize,
}

impl Synthetic {
    /// 1000 images per class for training, 200 for validation.
    pub fn new(seed: u64, split: Split) -> Synthetic {
        let per_class = match split {
            Split::Train => 1000,
            Split::Val => 200,
        };
        Synthetic {
            seed,
            split,
            per_class,
        }
    }
    pub fn len(&self) -> usize {
        self.per_class * CLASSES.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn label(&self, index: usize) -> u32 {
        (index / self.per_class) as u32
    }
    pub fn describe(&self) -> String {
        format!(
            "seed={},split={:?},per_class={}",
            self.seed, self.split, self.per_class
        )
    }

    /// Image `index` as `size`×`size` RGB, HWC `u8`.
    pub fn render(&self, index: usize, size: usize) -> Vec<u8> {
        let split_bit = match self.split {
            Split::Train => 0,
            Split::Val => 1 << 31,
        };
        let stream = STREAM_SYNTHETIC | split_bit | (index as u64 & 0x7FFF_FFFF);
        let word = |k: u64| philox::word(self.seed, stream, k);
        let uniform = |k: u64, lo: f32, hi: f32| lo + (hi - lo) * philox::uniform(word(k));
        let class = self.label(index);
        // Background uniform; foreground at least 96 levels away in each channel (mod 256).
        let bg = [0, 1, 2].map(|c| (word(c) >> 24) as f32);
        let fg = [0, 1, 2].map(|c| (bg[c] + uniform(3 + c as u64, 96.0, 160.0)) % 256.0);
        let (cx, cy) = (uniform(6, 0.35, 0.65), uniform(7, 0.35, 0.65));
        let radius = uniform(8, 0.18, 0.3);
        let freq = uniform(9, 2.5, 4.5);
        let phase = uniform(10, 0.0, 1.0);
        let angle = uniform(11, 0.0, std::f32::consts::TAU);
        let stripes = |t: f32| ((t * freq + phase).rem_euclid(1.0) < 0.5) as u8 as f32;
        let mut out = vec![0u8; size * size * 3];
        for y in 0..size {
            for x in 0..size {
                let (u, v) = (
                    (x as f32 + 0.5) / size as f32,
                    (y as f32 + 0.5) / size as f32,
                );
                let (du, dv) = (u - cx, v - cy);
                let dist = (du * du + dv * dv).sqrt();
                let t = match class {
                    0 => stripes(v),
                    1 => stripes(u),
                    2 => stripes((u + v) * std::f32::consts::FRAC_1_SQRT_2),
                    3 => (dist < radius) as u8 as f32,
                    4 => ((dist - radius).abs() < 0.06) as u8 as f32,
                    5 => (du.abs().max(dv.abs()) < 0.85 * radius) as u8 as f32,
                    6 => {
                        ((du.abs() < 0.07 && dv.abs() < radius)
                            || (dv.abs() < 0.07 && du.abs() < radius)) as u8
                            as f32
                    }
                    7 => (((u * freq + phase).floor() + (v * freq + phase).floor()) as i64)
                        .rem_euclid(2) as f32,
                    8 => (dv.abs() < radius && du.abs() < (dv + radius) * 0.5) as u8 as f32,
                    _ => (0.5 + 1.2 * ((u - 0.5) * angle.cos() + (v - 0.5) * angle.sin()))
                        .clamp(0.0, 1.0),
                };
                // Noise: the sum of two random bytes, centred (triangular, σ ≈ 16 levels).
                let pixel = (y * size + x) as u64;
                for c in 0..3 {
                    let bits = word(PARAMETER_WORDS + (pixel * 3 + c as u64) / 2);
                    let pair = if (pixel * 3 + c as u64).is_multiple_of(2) {
                        bits
                    } else {
                        bits >> 16
                    };
                    let noise = ((pair & 0xFF) as f32 + ((pair >> 8) & 0xFF) as f32 - 255.0) * 0.15;
                    let value = bg[c] + t * (fg[c] - bg[c]) + noise;
                    out[(pixel as usize) * 3 + c] = value.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }
}
