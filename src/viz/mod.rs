//! Pictures: training curves (`chart`) and the conv1 filter grid of the paper's Figure 3
//! (`filters`), drawn straight into RGB images.

pub mod chart;
pub mod filters;

use image::{Rgb, RgbImage};

/// Draws `text` with its top-left corner at (`x`, `y`) in the 8x8 bitmap font, scaled by `scale`.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: i64, color: Rgb<u8>) {
    use font8x8::UnicodeFonts;
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (i as i64 * 8 + col) * scale + dx;
                        let py = y + row as i64 * scale + dy;
                        put(img, px, py, color);
                    }
                }
            }
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: i64) -> i64 {
    text.chars().count() as i64 * 8 * scale
}

/// Sets a pixel, ignoring coordinates outside the image.
pub fn put(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, color);
    }
}

/// A line from (x0, y0) to (x1, y1), `width` pixels thick (Bresenham with a square pen).
pub fn draw_line(
    img: &mut RgbImage,
    (x0, y0): (i64, i64),
    (x1, y1): (i64, i64),
    width: i64,
    color: Rgb<u8>,
) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        for ox in 0..width {
            for oy in 0..width {
                put(img, x + ox - width / 2, y + oy - width / 2, color);
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}
