//! From a base image to the network's input: the paper's training augmentation (random crop,
//! horizontal mirror, PCA colour noise) and its evaluation views (centre crop, ten crops), each
//! with the mean image subtracted; or the released code's variant of them (`Augment::Net145`).
//!
//! Output scale: `f32` CHW, pixel values in 0..255 minus the mean image (so roughly −128..128),
//! as the paper implies; no further scaling. Every random choice is drawn from
//! `crate::ops::philox` keyed by (seed, epoch, sample index), so an image's augmentation is a
//! pure function of those three: the same under any thread count and after a resume.

use super::stats::Stats;
use crate::ops::philox;
pub use crate::recipe::{Augment, NET145_CROP_CHUNK};
use anyhow::{Result, ensure};

/// Names the augmentation's Philox stream: this tag in the high half, the epoch in the low half.
const STREAM_AUGMENT: u64 = 0xDA7A_0002 << 32;
/// The same for views drawn once per chunk of images (`Augment::Net145`).
const STREAM_CHUNK_VIEWS: u64 = 0xDA7A_0003 << 32;

impl Augment {
    /// Where the mean image is cut for an input cut at `view`.
    pub fn mean_view(self, view: View, g: Geometry) -> View {
        match self {
            Augment::Paper => view,
            Augment::Net145 => EvalViews::Centre.views(g)[0],
        }
    }

    /// The colour shift and the scale of a training input for noise coefficients `alpha`
    /// (drawn by `draw` with σ = `colour_noise`).
    pub fn colour(self, stats: &Stats, alpha: [f64; 3], colour_noise: f64) -> ([f32; 3], f32) {
        match self {
            Augment::Paper => (colour_shift(stats, alpha), 1.0),
            Augment::Net145 => {
                // √λ: the standard deviation along each component, on the 0..255 scale.
                let shift = mix(stats, alpha, |a, lambda| a * lambda.max(0.0).sqrt());
                (shift, (1.0 / (1.0 + colour_noise)) as f32)
            }
        }
    }
}
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
    /// The paper's ten crops where `ten_crop` asks for them, else the centre crop.
    pub fn from_ten_crop(ten_crop: bool) -> EvalViews {
        if ten_crop {
            EvalViews::TenCrop
        } else {
            EvalViews::Centre
        }
    }

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
    let view = random_view(w, g);
    let alpha = [0, 1, 2].map(|i| alpha_std * philox::normal(w(3 + 2 * i), w(4 + 2 * i)));
    Augmentation { view, alpha }
}

/// `draw` under `augment` for the sample at `position` of the epoch's order: where the crop and
/// mirror are drawn once per chunk, they are the chunk's (keyed by the position, so a replaced
/// unreadable sample takes its slot's view); α stays the sample's own.
pub fn draw_for(
    augment: Augment,
    seed: u64,
    epoch: u32,
    position: usize,
    sample: usize,
    g: Geometry,
    alpha_std: f64,
) -> Augmentation {
    let mut aug = draw(seed, epoch, sample, g, alpha_std);
    let chunk = augment.crop_chunk();
    if chunk > 1 {
        let stream = STREAM_CHUNK_VIEWS | epoch as u64;
        let w = |k: u64| philox::word(seed, stream, (position / chunk) as u64 * 4 + k);
        aug.view = random_view(w, g);
    }
    aug
}

/// A crop corner uniform over the `(base − crop + 1)²` positions and a mirror with probability
/// ½, from words 0, 1 and 2 of `w`.
fn random_view(w: impl Fn(u64) -> u32, g: Geometry) -> View {
    let positions = (g.base - g.crop + 1) as u64;
    View {
        x: ((w(0) as u64 * positions) >> 32) as usize,
        y: ((w(1) as u64 * positions) >> 32) as usize,
        mirror: w(2) >> 31 == 1,
    }
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
    mix(stats, alpha, |a, lambda| a * lambda / 255.0)
}

/// `Σ_i p_i · weight(α_i, λ_i)` over the colour principal components p_i, per channel.
fn mix(stats: &Stats, alpha: [f64; 3], weight: impl Fn(f64, f64) -> f64) -> [f32; 3] {
    let mut shift = [0.0f64; 3];
    for ((&a, lambda), p) in alpha.iter().zip(stats.eigenvalues).zip(stats.eigenvectors) {
        let w = weight(a, lambda);
        for (s, pc) in shift.iter_mut().zip(p) {
            *s += pc * w;
        }
    }
    shift.map(|s| s as f32)
}

/// What `render` makes of a base image: the crop at `view`, minus the mean image cut at
/// `mean_view`, plus `shift` per channel, all times `scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pixels {
    pub view: View,
    pub mean_view: View,
    pub shift: [f32; 3],
    pub scale: f32,
}

impl Pixels {
    /// An evaluation view under `augment`: no noise, scale 1.
    pub fn eval(augment: Augment, view: View, g: Geometry) -> Pixels {
        Pixels {
            view,
            mean_view: augment.mean_view(view, g),
            shift: [0.0; 3],
            scale: 1.0,
        }
    }

    /// A training input under `augment` with the random choices `aug`.
    pub fn train(
        augment: Augment,
        aug: &Augmentation,
        stats: &Stats,
        colour_noise: f64,
        g: Geometry,
    ) -> Pixels {
        let (shift, scale) = augment.colour(stats, aug.alpha, colour_noise);
        Pixels {
            view: aug.view,
            mean_view: augment.mean_view(aug.view, g),
            shift,
            scale,
        }
    }
}

/// Writes one network input as `px` says: the `crop`×`crop` window of `image` (HWC `u8`,
/// `base`×`base`) minus the mean image (CHW), as CHW `f32` into `out` (`3 * crop * crop`).
pub fn render(image: &[u8], mean: &[f32], g: Geometry, px: &Pixels, out: &mut [f32]) {
    let (base, crop) = (g.base, g.crop);
    assert_eq!(image.len(), base * base * 3);
    assert_eq!(mean.len(), base * base * 3);
    assert_eq!(out.len(), g.input_len());
    let (view, mv) = (px.view, px.mean_view);
    // One row at a time: the crop's pixels de-interleaved into channel rows in output order
    // (reversed when mirrored), then each output row is one straight, vectorisable pass over a
    // channel row and the mean image's row (itself walked backwards when its view is mirrored).
    let mut rows = vec![0f32; 3 * crop];
    let (r, rest) = rows.split_at_mut(crop);
    let (g_row, b_row) = rest.split_at_mut(crop);
    for y in 0..crop {
        let src = &image[((view.y + y) * base + view.x) * 3..][..crop * 3];
        let pixels = src.chunks_exact(3);
        let deinterleave = |((r, g), b): ((&mut f32, &mut f32), &mut f32), p: &[u8]| {
            (*r, *g, *b) = (p[0] as f32, p[1] as f32, p[2] as f32);
        };
        let dst = r.iter_mut().zip(g_row.iter_mut()).zip(b_row.iter_mut());
        if view.mirror {
            dst.rev().zip(pixels).for_each(|(d, p)| deinterleave(d, p));
        } else {
            dst.zip(pixels).for_each(|(d, p)| deinterleave(d, p));
        }
        for (c, channel) in [&*r, &*g_row, &*b_row].into_iter().enumerate() {
            let (shift, scale) = (px.shift[c], px.scale);
            let plane = &mean[c * base * base..][..base * base];
            let mean_row = &plane[(mv.y + y) * base + mv.x..][..crop];
            let dst = &mut out[(c * crop + y) * crop..][..crop];
            let value = |(d, (&p, &m)): (&mut f32, (&f32, &f32))| *d = (p - m + shift) * scale;
            if mv.mirror {
                dst.iter_mut()
                    .zip(channel.iter().zip(mean_row.iter().rev()))
                    .for_each(value);
            } else {
                dst.iter_mut()
                    .zip(channel.iter().zip(mean_row))
                    .for_each(value);
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

    /// A 4×4 HWC image whose pixel (x, y) channel c holds 100 + 10y + x + 50c.
    fn ramp_4x4() -> Vec<u8> {
        (0..16)
            .flat_map(|p| (0..3).map(move |c| (100 + 10 * (p / 4) + p % 4 + 50 * c) as u8))
            .collect()
    }

    #[test]
    fn render_crops_mirrors_and_subtracts_the_mean() {
        let g = Geometry::new(4, 2).unwrap();
        // The mean is 1 everywhere.
        let image = ramp_4x4();
        let mean = vec![1.0; 48];
        let mut out = vec![0.0; 12];
        let view = View {
            x: 1,
            y: 2,
            mirror: true,
        };
        let px = Pixels {
            view,
            mean_view: Augment::Paper.mean_view(view, g),
            shift: [0.5, 0.0, -0.5],
            scale: 1.0,
        };
        render(&image, &mean, g, &px, &mut out);
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
    fn net145_subtracts_the_centre_of_the_mean_and_scales() {
        let g = Geometry::new(4, 2).unwrap();
        // Mean (x, y) channel c is x + 4y + c.
        let image = ramp_4x4();
        let mean: Vec<f32> = (0..48).map(|i| (i % 16 + i / 16) as f32).collect();
        let view = View {
            x: 0,
            y: 2,
            mirror: true,
        };
        let px = Pixels {
            view,
            mean_view: Augment::Net145.mean_view(view, g),
            shift: [2.0, 0.0, 0.0],
            scale: 0.5,
        };
        assert_eq!(
            px.mean_view,
            View {
                x: 1,
                y: 1,
                mirror: false
            }
        );
        let mut out = vec![0.0; 12];
        render(&image, &mean, g, &px, &mut out);
        // Channel 0, output (0, 0): image (1, 2) (mirrored), mean (1, 1) (the centre, unmirrored).
        assert_eq!(out[0], (121.0 - 5.0 + 2.0) * 0.5);
        // Output (1, 1): image (0, 3), mean (2, 2).
        assert_eq!(out[3], (130.0 - 10.0 + 2.0) * 0.5);
        // Channel 2, output (1, 0): image (0, 2), mean (2, 1) + 2.
        assert_eq!(out[9], (220.0 - 8.0) * 0.5);
        // Evaluation views under net145 use the same centre of the mean, unscaled.
        let eval = Pixels::eval(Augment::Net145, view, g);
        assert_eq!(
            (eval.mean_view, eval.shift, eval.scale),
            (px.mean_view, [0.0; 3], 1.0)
        );
        assert_eq!(Pixels::eval(Augment::Paper, view, g).mean_view, view);
    }

    #[test]
    fn net145_draws_crops_per_chunk_of_32_and_noise_per_image() {
        let g = Geometry::new(256, 224).unwrap();
        let at = |augment, position, sample| draw_for(augment, 5, 2, position, sample, g, 0.1);
        // Paper: `draw_for` is `draw`, the sample's own.
        assert_eq!(at(Augment::Paper, 7, 99), draw(5, 2, 99, g, 0.1));
        let first = at(Augment::Net145, 0, 1000);
        for position in 1..32 {
            let a = at(Augment::Net145, position, 1000 + position);
            assert_eq!(a.view, first.view, "position {position}");
            assert_eq!(a.alpha, draw(5, 2, 1000 + position, g, 0.1).alpha);
        }
        // Chunks draw independently: among 64 chunks, crops differ and about half are mirrored.
        let views: Vec<View> = (0..64)
            .map(|c| at(Augment::Net145, 32 * c, c).view)
            .collect();
        let distinct: std::collections::HashSet<_> = views.iter().map(|v| (v.x, v.y)).collect();
        assert!(distinct.len() > 50, "{} distinct crops", distinct.len());
        let mirrored = views.iter().filter(|v| v.mirror).count();
        assert!((16..=48).contains(&mirrored), "{mirrored} of 64 mirrored");
        assert!(views.iter().all(|v| v.x <= 32 && v.y <= 32));
    }

    #[test]
    fn net145_colour_noise_uses_root_eigenvalues_and_divides_by_one_plus_sigma() {
        let stats = Stats {
            base: 4,
            mean: vec![0.0; 48],
            covariance: [[400.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 25.0]],
            eigenvalues: [400.0, 100.0, 25.0],
            eigenvectors: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            images: 1,
            samples: 1,
            classes: Vec::new(),
        };
        let alpha = [0.1, -0.2, 0.3];
        let (shift, scale) = Augment::Net145.colour(&stats, alpha, 0.1);
        assert_eq!(shift, [0.1 * 20.0, -0.2 * 10.0, 0.3 * 5.0]);
        assert_eq!(scale, (1.0 / 1.1f64) as f32);
        let (shift, scale) = Augment::Paper.colour(&stats, alpha, 0.1);
        assert_eq!(
            shift,
            [
                0.1 * 400.0 / 255.0,
                -0.2 * 100.0 / 255.0,
                0.3 * 25.0 / 255.0
            ]
            .map(|v: f64| v as f32)
        );
        assert_eq!(scale, 1.0);
        // No noise: no division either, as in the released code.
        assert_eq!(
            Augment::Net145.colour(&stats, [0.0; 3], 0.0),
            ([0.0; 3], 1.0)
        );
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
