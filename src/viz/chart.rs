//! Line charts for training curves: panels side by side, each with axes, ticks, and a legend,
//! drawn with plotters.

use super::{Canvas, FONT, draw_on, pixel};
use anyhow::Result;
use image::RgbImage;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
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

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
];
const INK: RGBColor = RGBColor(40, 40, 40);
const GRID: RGBColor = RGBColor(225, 225, 225);
const PANEL_W: u32 = 560;
const PANEL_H: u32 = 400;

/// Ticks of a log axis spanning [lo, hi]: 1, 2 and 5 times each power of ten, thinned to the
/// powers alone over more than two decades, and every multiple within one. (plotters' own log
/// axis puts ticks at powers of ten only, so a loss between 1.5 and 7 would get none.)
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let steps: &[f64] = match hi / lo {
        r if r > 100.0 => &[1.0],
        r if r > 10.0 => &[1.0, 2.0, 5.0],
        _ => &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    };
    let decades = (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32);
    let values = decades.flat_map(|k| steps.iter().map(move |m| m * 10f64.powi(k)));
    values.filter(|v| (lo..=hi).contains(v)).collect()
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

/// The panel's curves as drawn: non-finite points dropped and, on a log axis, those at or
/// below zero.
fn shown_points(panel: &Panel) -> Vec<Vec<(f64, f64)>> {
    let shown = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!panel.log_y || y > 0.0);
    let points = |s: &Series| s.points.iter().copied().filter(shown).collect();
    panel.series.iter().map(points).collect()
}

/// The axes' ranges, or None with no point to draw.
fn bounds(curves: &[Vec<(f64, f64)>], log_y: bool) -> Option<(Range<f64>, Range<f64>)> {
    // A log axis is spanned, padded and widened in decades.
    let to_axis = |y: f64| if log_y { y.log10() } else { y };
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in curves.iter().flatten() {
        let y = to_axis(y);
        (xmin, xmax, ymin, ymax) = (xmin.min(x), xmax.max(x), ymin.min(y), ymax.max(y));
    }
    if xmin > xmax {
        return None;
    }
    // Curves of losses and errors read best from zero (a log axis has none).
    if !log_y {
        ymin = ymin.min(0.0);
    }
    if xmax == xmin {
        xmax = xmin + 1.0;
    }
    if ymax == ymin {
        ymax = ymin + 1.0;
    }
    ymax += 0.05 * (ymax - ymin);
    let from_axis = |y: f64| if log_y { 10f64.powf(y) } else { y };
    Some((xmin..xmax, from_axis(ymin)..from_axis(ymax)))
}

fn draw_panel(area: &Canvas, panel: &Panel) -> Result<()> {
    let area = area.titled(&panel.title, text(20))?;
    let curves = shown_points(panel);
    let Some((x, y)) = bounds(&curves, panel.log_y) else {
        let (w, h) = area.dim_in_pixel();
        let centre = Pos::new(HPos::Center, VPos::Center);
        area.draw_text(
            "no data",
            &text(20).pos(centre),
            (w as i32 / 2, h as i32 / 2),
        )?;
        return Ok(());
    };
    if panel.log_y {
        let ticks = log_ticks(y.start, y.end);
        plot(
            &area,
            panel,
            curves,
            x,
            y.log_scale().with_key_points(ticks),
        )
    } else {
        plot(&area, panel, curves, x, y)
    }
}

fn text(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&INK)
}

/// Axes, curves and legend, on a linear or a log y axis.
fn plot<Y>(
    area: &Canvas,
    panel: &Panel,
    curves: Vec<Vec<(f64, f64)>>,
    x: Range<f64>,
    y: Y,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(6)
        .max_light_lines(0)
        .bold_line_style(GRID)
        .axis_style(INK)
        .label_style(text(13))
        .axis_desc_style(text(14))
        .x_desc(&panel.x_label)
        .x_label_formatter(&|x| label(*x))
        .y_label_formatter(&|y| label(*y))
        .draw()?;
    for (i, (series, points)) in panel.series.iter().zip(curves).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        // A lone point makes no line: a dot shows it.
        if let [only] = points[..] {
            chart.draw_series([Circle::new(only, 3, color.filled())])?;
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(&series.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(GRID)
        .label_font(text(13))
        .draw()?;
    Ok(())
}

/// The panels side by side in one image.
pub fn render(panels: &[Panel]) -> RgbImage {
    let width = PANEL_W * panels.len().max(1) as u32;
    let mut img = RgbImage::from_pixel(width, PANEL_H, pixel(WHITE));
    draw_on(&mut img, |canvas| {
        let areas = canvas.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel)?;
        }
        Ok(())
    });
    img
}

/// The panels side by side, written to `path` as a PNG.
pub fn save_panels(path: &Path, panels: &[Panel]) -> Result<()> {
    super::save_png(path, &render(panels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(title: &str, points: Vec<(f64, f64)>, log_y: bool) -> Panel {
        Panel {
            title: title.into(),
            x_label: "epoch".into(),
            series: vec![Series {
                label: "train".into(),
                points,
            }],
            log_y,
        }
    }

    /// Pixels of `color` in the `i`th panel of `img`.
    fn count(img: &RgbImage, i: u32, color: RGBColor) -> usize {
        let x0 = i * PANEL_W;
        (x0..x0 + PANEL_W)
            .flat_map(|x| (0..PANEL_H).map(move |y| (x, y)))
            .filter(|&(x, y)| *img.get_pixel(x, y) == pixel(color))
            .count()
    }

    #[test]
    fn log_ticks_are_round_and_labels_short() {
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(100000.0), "1e5");
        let labels = |ticks: Vec<f64>| ticks.into_iter().map(label).collect::<Vec<_>>();
        // A loss from 0.03 to 2.5 (under two decades): 1x, 2x and 5x each power of ten.
        assert_eq!(
            labels(log_ticks(0.03, 2.5)),
            ["0.05", "0.1", "0.2", "0.5", "1", "2"]
        );
        assert_eq!(labels(log_ticks(1.5, 7.0)), ["2", "3", "4", "5", "6", "7"]);
        assert_eq!(
            labels(log_ticks(3e-4, 16.0)),
            ["1e-3", "0.01", "0.1", "1", "10"]
        );
    }

    #[test]
    fn curves_are_drawn_in_their_colours() {
        let img = render(&[
            panel("loss", vec![(0.0, 2.3), (1.0, 1.5), (2.0, 1.0)], false),
            Panel {
                series: vec![],
                ..panel("empty", vec![], false)
            },
        ]);
        assert_eq!((img.width(), img.height()), (2 * PANEL_W, PANEL_H));
        // Two segments spanning the plot's ~470 px at 2 px, plus the legend swatch.
        let blue = count(&img, 0, PALETTE[0]);
        assert!(blue > 2 * 400, "{blue} curve pixels");
        // The empty panel has its title and "no data" (dark, anti-aliased), and no curve.
        assert_eq!(count(&img, 1, PALETTE[0]), 0);
        let dark = |x: u32| {
            (0..PANEL_H)
                .filter(|&y| img.get_pixel(x, y).0.iter().all(|&c| c < 128))
                .count()
        };
        assert!((PANEL_W..2 * PANEL_W).map(dark).sum::<usize>() > 100);
    }

    #[test]
    fn log_axis_drops_non_positive_points_and_shows_a_lone_point() {
        let curves = shown_points(&panel(
            "loss",
            vec![(0.0, 0.0), (1.0, -1.0), (2.0, 10.0)],
            true,
        ));
        assert_eq!(curves, [vec![(2.0, 10.0)]]);
        let img = render(&[
            panel("loss", vec![(0.0, 0.0), (1.0, -1.0), (2.0, 10.0)], true),
            panel("loss", vec![], true),
        ]);
        // The dot (radius 3) and the legend swatch; the panel of no points says "no data".
        let blue = count(&img, 0, PALETTE[0]);
        assert!(blue >= 25 + 16, "{blue} pixels");
        assert_eq!(count(&img, 1, PALETTE[0]), 0);
    }
}
