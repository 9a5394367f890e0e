//! The first layer's kernels as one picture, like the paper's Figure 3: each 11x11x3 filter
//! contrast-stretched on its own and enlarged, towers one after the other (in the paper, the
//! first tower's kernels are largely colour-agnostic and the second's colour-specific).

use image::{Rgb, RgbImage};

/// Filters `[count, 3, k, k]` as a grid `columns` wide, each pixel drawn `zoom`x`zoom`, one
/// pixel of gap.
pub fn filter_grid(weights: &[f32], count: usize, k: usize, columns: usize, zoom: u32) -> RgbImage {
    assert_eq!(
        weights.len(),
        count * 3 * k * k,
        "filter grid expects [count, 3, k, k] weights"
    );
    let rows = count.div_ceil(columns);
    let cell = k as u32 * zoom + 1;
    let mut img = RgbImage::from_pixel(
        columns as u32 * cell + 1,
        rows as u32 * cell + 1,
        Rgb([255, 255, 255]),
    );
    for f in 0..count {
        let w = &weights[f * 3 * k * k..(f + 1) * 3 * k * k];
        let (lo, hi) = w
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let span = (hi - lo).max(f32::MIN_POSITIVE);
        let (cx, cy) = (
            (f % columns) as u32 * cell + 1,
            (f / columns) as u32 * cell + 1,
        );
        for y in 0..k {
            for x in 0..k {
                let c = |ch: usize| ((w[(ch * k + y) * k + x] - lo) / span * 255.0).round() as u8;
                let px = Rgb([c(0), c(1), c(2)]);
                for dy in 0..zoom {
                    for dx in 0..zoom {
                        img.put_pixel(cx + x as u32 * zoom + dx, cy + y as u32 * zoom + dy, px);
                    }
                }
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_filter_is_stretched_to_the_full_range() {
        // Two 2x2 filters: the first a ramp in red only, the second constant except one pixel.
        let mut w = vec![0.0f32; 2 * 3 * 4];
        w[..4].copy_from_slice(&[0.0, 1.0, 2.0, 3.0]);
        w[12 + 3] = -5.0;
        let img = filter_grid(&w, 2, 2, 2, 3);
        assert_eq!((img.width(), img.height()), (2 * 7 + 1, 7 + 1));
        assert_eq!(img.get_pixel(1, 1), &Rgb([0, 0, 0])); // first filter, (0, 0): its minimum
        assert_eq!(img.get_pixel(1 + 3, 1 + 3), &Rgb([255, 0, 0])); // its maximum, (1, 1), in red only
        assert_eq!(img.get_pixel(8 + 3, 1 + 3), &Rgb([0, 255, 255])); // -5 in red: the minimum
    }
}
