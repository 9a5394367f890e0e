//! Line charts for training curves: panels side by side, each with axes, ticks, and a legend.

use super::{draw_line, draw_text, put, text_width};
use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub series: Vec<Series>,
    /// A logarithmic y axis (points at or below zero are left out): losses that fall over
    /// orders of magnitude, or that spike, read better so.
    pub log_y: bool,
}

const PALETTE: [Rgb<u8>; 6] = [
    Rgb([31, 119, 180]),
    Rgb([214, 39, 40]),
    Rgb([44, 160, 44]),
    Rgb([255, 127, 14]),
    Rgb([148, 103, 189]),
    Rgb([23, 190, 207]),
];
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const PANEL_W: u32 = 560;
const PANEL_H: u32 = 400;
const MARGIN: (i64, i64, i64, i64) = (70, 30, 30, 50); // left, right, top, bottom

/// Tick positions covering [lo, hi] at a 1-2-5 step giving about five ticks.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Ticks of a log10 axis spanning [lo, hi] (in log10 units): 1, 2 and 5 times each power of
/// ten, thinned to the powers alone over more than two decades. Returns (position, value).
fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let steps: &[f64] = if hi - lo > 2.0 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut out = Vec::new();
    for k in (lo.floor() as i64)..=(hi.ceil() as i64) {
        for m in steps {
            let value = m * 10f64.powi(k as i32);
            let at = value.log10();
            if (lo..=hi).contains(&at) {
                out.push((at, value));
            }
        }
    }
    out
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-2 {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn draw_panel(img: &mut RgbImage, x0: i64, panel: &Panel) {
    let (ml, mr, mt, mb) = MARGIN;
    let (left, right, top, bottom) = (x0 + ml, x0 + PANEL_W as i64 - mr, mt, PANEL_H as i64 - mb);
    // On a log axis the curves are drawn in log10(y).
    let fy = |y: f64| if panel.log_y { y.log10() } else { y };
    let shown = |p: &&(f64, f64)| p.0.is_finite() && fy(p.1).is_finite();
    let all = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(shown)
    };
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all() {
        let y = fy(y);
        (xmin, xmax, ymin, ymax) = (xmin.min(x), xmax.max(x), ymin.min(y), ymax.max(y));
    }
    draw_text(img, left, 8, &panel.title, 2, INK);
    if xmin > xmax {
        draw_text(img, left + 10, (top + bottom) / 2, "no data", 2, INK);
        return;
    }
    // Curves of losses and errors read best from zero (a log axis has none).
    if !panel.log_y {
        ymin = ymin.min(0.0);
    }
    if xmax == xmin {
        xmax = xmin + 1.0;
    }
    if ymax == ymin {
        ymax = ymin + 1.0;
    }
    ymax += 0.05 * (ymax - ymin);
    let px = |x: f64| left + ((x - xmin) / (xmax - xmin) * (right - left) as f64).round() as i64;
    let py = |y: f64| bottom - ((y - ymin) / (ymax - ymin) * (bottom - top) as f64).round() as i64;
    let y_ticks: Vec<(f64, f64)> = if panel.log_y {
        log_ticks(ymin, ymax)
    } else {
        ticks(ymin, ymax).into_iter().map(|t| (t, t)).collect()
    };
    for (at, value) in y_ticks {
        draw_line(img, (left, py(at)), (right, py(at)), 1, GRID);
        let l = label(value);
        draw_text(img, left - 6 - text_width(&l, 1), py(at) - 4, &l, 1, INK);
    }
    for t in ticks(xmin, xmax) {
        draw_line(img, (px(t), top), (px(t), bottom), 1, GRID);
        let l = label(t);
        draw_text(img, px(t) - text_width(&l, 1) / 2, bottom + 6, &l, 1, INK);
    }
    draw_line(img, (left, bottom), (right, bottom), 1, INK);
    draw_line(img, (left, top), (left, bottom), 1, INK);
    draw_text(
        img,
        (left + right) / 2 - text_width(&panel.x_label, 1) / 2,
        bottom + 22,
        &panel.x_label,
        1,
        INK,
    );
    for (i, s) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(i64, i64)> = s
            .points
            .iter()
            .filter(shown)
            .map(|&(x, y)| (px(x), py(fy(y))))
            .collect();
        for w in pts.windows(2) {
            draw_line(img, w[0], w[1], 2, color);
        }
        if let [only] = pts[..] {
            for d in -2..=2 {
                put(img, only.0 + d, only.1, color);
                put(img, only.0, only.1 + d, color);
            }
        }
        // Legend, top right.
        let ly = top + 6 + 14 * i as i64;
        let lx = right - 8 - text_width(&s.label, 1) - 22;
        draw_line(img, (lx, ly + 4), (lx + 16, ly + 4), 2, color);
        draw_text(img, lx + 22, ly, &s.label, 1, INK);
    }
}

/// The panels side by side in one image.
pub fn render(panels: &[Panel]) -> RgbImage {
    let mut img = RgbImage::from_pixel(
        PANEL_W * panels.len().max(1) as u32,
        PANEL_H,
        Rgb([255, 255, 255]),
    );
    for (i, p) in panels.iter().enumerate() {
        draw_panel(&mut img, i as i64 * PANEL_W as i64, p);
    }
    img
}

pub fn save_png(path: &Path, panels: &[Panel]) -> Result<()> {
    render(panels)
        .save(path)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 1.0),
            [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(ticks(0.0, 90.0), [0.0, 20.0, 40.0, 60.0, 80.0]);
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(100000.0), "1e5");
        // A loss from 0.03 to 2.5 (under two decades): 1x, 2x and 5x each power of ten.
        let values: Vec<f64> = log_ticks(0.03f64.log10(), 2.5f64.log10())
            .iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(values, [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]);
        let wide: Vec<f64> = log_ticks(-3.5, 1.2).iter().map(|t| t.1).collect();
        assert_eq!(wide, [0.001, 0.01, 0.1, 1.0, 10.0]);
    }

    #[test]
    fn curves_are_drawn_in_their_colours() {
        let panel = Panel {
            title: "loss".into(),
            x_label: "epoch".into(),
            series: vec![Series {
                label: "train".into(),
                points: vec![(0.0, 2.3), (1.0, 1.5), (2.0, 1.0)],
            }],
            log_y: false,
        };
        let img = render(&[
            panel,
            Panel {
                title: "empty".into(),
                x_label: "epoch".into(),
                series: vec![],
                log_y: false,
            },
        ]);
        assert_eq!((img.width(), img.height()), (2 * PANEL_W, PANEL_H));
        let blue = img.pixels().filter(|p| **p == PALETTE[0]).count();
        // Two segments spanning the plot width at 2 px plus the legend swatch.
        assert!(blue > 2 * (PANEL_W as usize - 100), "{blue} curve pixels");
    }
}
