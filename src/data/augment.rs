//! From a base image to the network's input: the paper's training augmentation (random crop,
//! horizontal mirror, PCA colour noise) and its evaluation views (centre crop, ten crops), each
//! with the mean image subtracted.
//!
//! Output scale: `f32` CHW, pixel values in 0..255 minus the mean image (so roughly −128..128),
//! as the paper implies; no further scaling. Every random choice is drawn from
//! `crate::ops::philox` keyed by (seed, epoch, sample index), so an image's augmentation is a
//! pure function of those three: the same under any thread count and after a resume.

use super::stats::Stats;
use crate::ops::philox;
use anyhow::{Result, ensure};

/// Names the augmentation's Philox stream: this tag in the high half, the epoch in the low half.
const STREAM_AUGMENT: u64 = 0xDA7A_0002 << 32;
/// Words reserved per sample in that stream (crop x, crop y, mirror, 3 × 2 for the normals).
const WORDS_PER_SAMPLE: u64 = 16;

/// The sizes of the pipeline: base images are `base`×`base`, network inputs `crop`×`crop`
/// (256/227 for the paper, 256/224 for `net145`, 32/32 or 32/28 for CIFAR-10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub base: usize,
    pub crop: usize,
}

impl Geometry {
    pub fn new(base: usize, crop: usize) -> Result<Geometry> {
        ensure!(
            base > 0 && crop > 0,
            "base {base} and crop {crop} must be positive"
        );
        ensure!(
            crop <= base,
            "crop {crop} is larger than the base image {base}"
        );
        Ok(Geometry { base, crop })
    }
    /// Floats in one network input, `3 * crop * crop`.
    pub fn input_len(&self) -> usize {
        3 * self.crop * self.crop
    }
}

/// Where a crop is cut from the base image (its top-left corner) and whether it is mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub x: usize,
    pub y: usize,
    pub mirror: bool,
}

/// The evaluation views of each image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalViews {
    /// The centre crop.
    Centre,
    /// The paper's ten: top-left, top-right, bottom-left, bottom-right, centre, then the same
    /// five mirrored, in that order.
    TenCrop,
}

impl EvalViews {
    pub fn count(self) -> usize {
        match self {
            EvalViews::Centre => 1,
            EvalViews::TenCrop => 10,
        }
    }
    pub fn views(self, g: Geometry) -> Vec<View> {
        let far = g.base - g.crop;
        let centre = View {
            x: far / 2,
            y: far / 2,
            mirror: false,
        };
        match self {
            EvalViews::Centre => vec![centre],
            EvalViews::TenCrop => {
                let five = [(0, 0), (far, 0), (0, far), (far, far), (far / 2, far / 2)];
                [false, true]
                    .iter()
                    .flat_map(|&mirror| five.map(|(x, y)| View { x, y, mirror }))
                    .collect()
            }
        }
    }
}

/// The random choices for one image in one epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augmentation {
    pub view: View,
    /// The PCA noise coefficients α_i ~ N(0, σ²) (σ = 0.1 in the paper).
    pub alpha: [f64; 3],
}

/// Draws sample `sample`'s augmentation in `epoch`: a crop corner uniform over the
/// `(base − crop + 1)²` positions, a mirror with probability ½, and α for the colour noise.
pub fn draw(seed: u64, epoch: u32, sample: usize, g: Geometry, alpha_std: f64) -> Augmentation {
    let stream = STREAM_AUGMENT | epoch as u64;
    let w = |k: u64| philox::word(seed, stream, sample as u64 * WORDS_PER_SAMPLE + k);
    let positions = (g.base - g.crop + 1) as u64;
    let view = View {
        x: ((w(0) as u64 * positions) >> 32) as usize,
        y: ((w(1) as u64 * positions) >> 32) as usize,
        mirror: w(2) >> 31 == 1,
    };
    let alpha = [0, 1, 2].map(|i| alpha_std * philox::normal(w(3 + 2 * i), w(4 + 2 * i)));
    Augmentation { view, alpha }
}

/// The paper's colour noise for coefficients `alpha`: `[p1 p2 p3]·[α1λ1 α2λ2 α3λ3]ᵀ`, in 0..255
/// units. The paper gives no pixel scale, and the formula is not scale-free (λ is quadratic in
/// it): read literally on 0..255 values, λ1 is of order 10⁴ and the shift of order 10³, beyond
/// the pixel range. We take λ on the unit scale (pixels / 255), where the shift is a few levels,
/// and convert back: shift = Σ p_i α_i (λ_i / 255²) · 255 = Σ p_i α_i λ_i / 255, with λ_i the
/// eigenvalues of the 0..255 covariance held in [`Stats`]. This is the scale of the ImageNet
/// eigenvalues widely reused since (fb.resnet.torch: 0.2175, 0.0188, 0.0045); the shared
/// 100-image sample gives 0.187, 0.016, 0.003 on it, so α = 0.1 shifts a pixel by ~5 levels.
pub fn colour_shift(stats: &Stats, alpha: [f64; 3]) -> [f32; 3] {
    let mut shift = [0.0f64; 3];
    for ((a, lambda), p) in alpha.iter().zip(stats.eigenvalues).zip(stats.eigenvectors) {
        let weight = a * lambda / 255.0;
        for (s, pc) in shift.iter_mut().zip(p) {
            *s += pc * weight;
        }
    }
    shift.map(|s| s as f32)
}

/// Writes one network input: the `crop`×`crop` window of `image` (HWC `u8`, `base`×`base`) at
/// `view`, minus the mean image (CHW, cut at the same place and mirrored with it), plus `shift`
/// per channel, as CHW `f32` into `out` (`3 * crop * crop`).
pub fn render(
    image: &[u8],
    mean: &[f32],
    g: Geometry,
    view: View,
    shift: [f32; 3],
    out: &mut [f32],
) {
    let (base, crop) = (g.base, g.crop);
    debug_assert_eq!(image.len(), base * base * 3);
    debug_assert_eq!(mean.len(), base * base * 3);
    debug_assert_eq!(out.len(), g.input_len());
    for c in 0..3 {
        for y in 0..crop {
            let row = (view.y + y) * base;
            let dst = &mut out[(c * crop + y) * crop..][..crop];
            for (x, d) in dst.iter_mut().enumerate() {
                let sx = view.x + if view.mirror { crop - 1 - x } else { x };
                let pixel = image[(row + sx) * 3 + c] as f32;
                *d = pixel - mean[c * base * base + row + sx] + shift[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_views_are_corners_centre_and_mirrors() {
        let g = Geometry::new(256, 227).unwrap();
        let v = EvalViews::TenCrop.views(g);
        assert_eq!(v.len(), 10);
        assert_eq!((v[0].x, v[0].y, v[3].x, v[3].y), (0, 0, 29, 29));
        assert_eq!((v[4].x, v[4].y), (14, 14));
        for i in 0..5 {
            assert_eq!(
                (v[i].x, v[i].y, v[i].mirror),
                (v[i + 5].x, v[i + 5].y, !v[i + 5].mirror)
            );
        }
        assert_eq!(EvalViews::Centre.views(g), vec![v[4]]);
    }

    #[test]
    fn render_crops_mirrors_and_subtracts_the_mean() {
        let g = Geometry::new(4, 2).unwrap();
        // Pixel (x, y) channel c holds 100 + 10y + x + 50c; the mean is 1 everywhere.
        let image: Vec<u8> = (0..16)
            .flat_map(|p| (0..3).map(move |c| (100 + 10 * (p / 4) + p % 4 + 50 * c) as u8))
            .collect();
        let mean = vec![1.0; 48];
        let mut out = vec![0.0; 12];
        render(
            &image,
            &mean,
            g,
            View {
                x: 1,
                y: 2,
                mirror: true,
            },
            [0.5, 0.0, -0.5],
            &mut out,
        );
        // Channel 0, row y=2: columns 2, 1 (mirrored).
        assert_eq!(
            &out[..4],
            &[
                100.0 + 20.0 + 2.0 - 1.0 + 0.5,
                120.0 + 1.0 - 1.0 + 0.5,
                132.0 - 0.5,
                131.0 - 0.5
            ]
        );
        assert_eq!(out[8], 200.0 + 20.0 + 2.0 - 1.0 - 0.5);
    }

    #[test]
    fn draws_are_pure_cover_every_position_and_have_the_stated_spread() {
        let g = Geometry::new(32, 28).unwrap();
        assert_eq!(draw(9, 3, 17, g, 0.1), draw(9, 3, 17, g, 0.1));
        assert_ne!(draw(9, 3, 17, g, 0.1), draw(9, 4, 17, g, 0.1));
        let n = 4000;
        let draws: Vec<Augmentation> = (0..n).map(|s| draw(1, 0, s, g, 0.1)).collect();
        let mut seen = [[false; 5]; 5];
        for d in &draws {
            seen[d.view.y][d.view.x] = true;
        }
        assert!(
            seen.iter().flatten().all(|&s| s),
            "every one of the 25 crop positions occurs"
        );
        let mirrored = draws.iter().filter(|d| d.view.mirror).count() as f64 / n as f64;
        // Binomial standard error at n = 4000 is 0.008; 5 sigma.
        assert!((mirrored - 0.5).abs() < 0.04, "{mirrored}");
        let var = draws.iter().map(|d| d.alpha[0].powi(2)).sum::<f64>() / n as f64;
        // α ~ N(0, 0.1²): variance 0.01 with standard error 0.01·√(2/n) ≈ 2.2e-4; 5 sigma.
        assert!((var - 0.01).abs() < 1.2e-3, "{var}");
    }
}
