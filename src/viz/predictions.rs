//! The left half of the paper's Figure 4: images in a grid, each with its top-k classes under
//! it as bars as long as their probabilities, the true class's bar in red, and the true class
//! named under the image when it is not among the bars.

use super::{Canvas, FONT, draw_on, fit, pixel, thumbnail, write};
use anyhow::Result;
use image::RgbImage;
use plotters::prelude::*;

pub struct Prediction {
    /// Any size: its centre square is shown as a `THUMB`-pixel thumbnail.
    pub image: RgbImage,
    /// Shown under the image (e.g. the true class name or the file name).
    pub caption: String,
    /// Class name and probability in [0, 1], most likely first; the first `TOP_K` are drawn.
    pub top: Vec<(String, f32)>,
    /// The true class's name, if known.
    pub truth: Option<String>,
}

/// Bars drawn per cell (the paper's top-5); entries of `top` past these are left out.
pub const TOP_K: usize = 5;
/// Space around a cell's contents.
pub const PAD: u32 = 6;
/// Side of the thumbnail, whose top-left corner is at (`PAD`, `PAD`) in its cell.
pub const THUMB: u32 = 144;
/// Height of a line of text.
pub const LINE: u32 = 16;
/// Top of the caption's line, under the thumbnail; the truth's line (when it has no bar) is
/// the next.
pub const CAPTION_TOP: u32 = PAD + THUMB + 2;
/// Top of the first bar; bar k's top is `BARS_TOP + k * BAR_PITCH`.
pub const BARS_TOP: u32 = CAPTION_TOP + 2 * LINE + 2;
pub const BAR_PITCH: u32 = 16;
pub const BAR_H: u32 = 14;
/// A bar of probability 1 spans the thumbnail's width, from x = `PAD` in its cell.
pub const BAR_W: u32 = THUMB;
/// Cell `i` (row-major, `columns` a row) has its top-left corner at
/// (`(i % columns) * CELL_W`, `(i / columns) * CELL_H`).
pub const CELL_W: u32 = THUMB + 2 * PAD;
pub const CELL_H: u32 = BARS_TOP + TOP_K as u32 * BAR_PITCH + PAD;

const TEXT_PX: f64 = 12.0;
const INK: RGBColor = RGBColor(30, 30, 30);
const BAR: RGBColor = RGBColor(150, 190, 230);
/// The true class's bar, and its name when it has none: red, as in the paper.
pub const TRUTH: RGBColor = RGBColor(235, 90, 80);
/// The bar's full width, faint, so a short bar reads as a fraction of 1.
const TRACK: RGBColor = RGBColor(238, 238, 238);

fn draw_bar(
    canvas: &Canvas,
    (x, y): (i32, i32),
    (name, p): &(String, f32),
    color: RGBColor,
) -> Result<()> {
    let len = (p.clamp(0.0, 1.0) * BAR_W as f32).round() as i32;
    let (w, h) = (BAR_W as i32, BAR_H as i32);
    canvas.draw(&Rectangle::new([(x, y), (x + w, y + h)], TRACK.filled()))?;
    if len > 0 {
        canvas.draw(&Rectangle::new([(x, y), (x + len, y + h)], color.filled()))?;
    }
    let style = (FONT, TEXT_PX).into_font().color(&INK);
    let name = fit(canvas, name, &style, BAR_W - 6)?;
    write(canvas, &name, &style, (x + 3, y + h - 3))
}

fn draw_cell(canvas: &Canvas, (x, y): (i32, i32), cell: &Prediction) -> Result<()> {
    let style = (FONT, TEXT_PX).into_font().color(&INK);
    let (left, line) = (x + PAD as i32, LINE as i32);
    let caption_base = y + CAPTION_TOP as i32 + line - 4;
    write(
        canvas,
        &fit(canvas, &cell.caption, &style, THUMB)?,
        &style,
        (left, caption_base),
    )?;
    let bars = &cell.top[..cell.top.len().min(TOP_K)];
    let is_truth = |name: &String| cell.truth.as_ref() == Some(name);
    if let Some(truth) = &cell.truth
        && !bars.iter().any(|(name, _)| is_truth(name))
    {
        let text = fit(canvas, &format!("true: {truth}"), &style, THUMB)?;
        write(
            canvas,
            &text,
            &style.color(&TRUTH),
            (left, caption_base + line),
        )?;
    }
    for (k, bar) in bars.iter().enumerate() {
        let top = y + (BARS_TOP + k as u32 * BAR_PITCH) as i32;
        let color = if is_truth(&bar.0) { TRUTH } else { BAR };
        draw_bar(canvas, (left, top), bar, color)?;
    }
    Ok(())
}

/// The cells in a grid `columns` wide (fewer when there are fewer cells), rows as needed.
pub fn render_predictions(cells: &[Prediction], columns: usize) -> RgbImage {
    let columns = columns.clamp(1, cells.len().max(1));
    let rows = cells.len().div_ceil(columns).max(1);
    let (w, h) = (columns as u32 * CELL_W, rows as u32 * CELL_H);
    let mut img = RgbImage::from_pixel(w, h, pixel(WHITE));
    let origin = |i: usize| ((i % columns) as u32 * CELL_W, (i / columns) as u32 * CELL_H);
    for (i, cell) in cells.iter().enumerate() {
        let (x, y) = origin(i);
        let thumb = thumbnail(&cell.image, THUMB);
        image::imageops::replace(&mut img, &thumb, (x + PAD).into(), (y + PAD).into());
    }
    draw_on(&mut img, |canvas| {
        for (i, cell) in cells.iter().enumerate() {
            let (x, y) = origin(i);
            draw_cell(canvas, (x as i32, y as i32), cell)?;
        }
        Ok(())
    });
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn solid(color: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(90, 60, Rgb(color))
    }

    fn cell(color: [u8; 3], top: &[(&str, f32)], truth: &str) -> Prediction {
        Prediction {
            image: solid(color),
            caption: "caption".into(),
            top: top.iter().map(|&(n, p)| (n.to_string(), p)).collect(),
            truth: Some(truth.into()),
        }
    }

    /// The colours of bar `k`'s top pixel row in the cell at (`x`, `y`), left to right.
    fn bar_row(img: &RgbImage, (x, y): (u32, u32), k: u32) -> Vec<Rgb<u8>> {
        let top = y + BARS_TOP + k * BAR_PITCH;
        (0..BAR_W)
            .map(|i| *img.get_pixel(x + PAD + i, top))
            .collect()
    }

    /// Whether the cell's truth line (under the caption) has red writing.
    fn red_truth_line(img: &RgbImage, (x, y): (u32, u32)) -> bool {
        let top = y + CAPTION_TOP + LINE;
        (top..top + LINE)
            .flat_map(|py| (x..x + CELL_W).map(move |px| (px, py)))
            .any(|(px, py)| {
                let [r, g, _] = img.get_pixel(px, py).0;
                r > 150 && g < 150
            })
    }

    #[test]
    fn grid_has_a_cell_per_prediction() {
        let cells: Vec<_> = (0..8)
            .map(|_| cell([0, 0, 0], &[("a", 0.5)], "a"))
            .collect();
        let img = render_predictions(&cells, 4);
        assert_eq!(img.dimensions(), (4 * CELL_W, 2 * CELL_H));
        // Fewer cells than columns: a single, narrower row.
        assert_eq!(
            render_predictions(&cells[..3], 4).dimensions(),
            (3 * CELL_W, CELL_H)
        );
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("predictions.png");
        crate::viz::save_png(&png, &render_predictions(&cells[..5], 2)).unwrap();
        let read = image::open(&png).unwrap().to_rgb8();
        assert_eq!(read.dimensions(), (2 * CELL_W, 3 * CELL_H));
    }

    #[test]
    fn bars_are_as_long_as_their_probabilities() {
        let cells = [
            cell([0, 0, 0], &[("cat", 1.0), ("dog", 0.25)], "dog"),
            cell([0, 0, 0], &[("cat", 0.6), ("dog", 0.3)], "fox"),
        ];
        let img = render_predictions(&cells, 2);
        let (bar, truth) = (pixel(BAR), pixel(TRUTH));
        let first = bar_row(&img, (0, 0), 0);
        assert_eq!(first[BAR_W as usize - 1], bar, "a bar of 1 spans the width");
        assert!(
            !first.contains(&truth),
            "the truth's colour only in its own bar"
        );
        let second = bar_row(&img, (0, 0), 1);
        let quarter = BAR_W as usize / 4;
        assert_eq!(second[quarter - 1], truth, "the truth's bar in red");
        assert!(
            second[quarter + 1..]
                .iter()
                .all(|p| *p != truth && *p != bar)
        );
        // The truth is among the bars in the first cell, not in the second: named under it.
        assert!(!red_truth_line(&img, (0, 0)));
        assert!(red_truth_line(&img, (CELL_W, 0)));
        assert!(!bar_row(&img, (CELL_W, 0), 0).contains(&truth));
    }

    #[test]
    fn thumbnails_sit_at_their_cells() {
        let colors = [
            [200, 0, 0],
            [0, 200, 0],
            [0, 0, 200],
            [200, 200, 0],
            [0, 200, 200],
        ];
        let cells: Vec<_> = colors
            .iter()
            .map(|&c| cell(c, &[("a", 0.5)], "a"))
            .collect();
        let img = render_predictions(&cells, 3);
        // Each cell's thumbnail centre, row-major; the sixth cell is empty.
        let centres: Vec<Rgb<u8>> = (0..6)
            .map(|i| {
                let (x, y) = ((i % 3) * CELL_W, (i / 3) * CELL_H);
                *img.get_pixel(x + PAD + THUMB / 2, y + PAD + THUMB / 2)
            })
            .collect();
        let found = centres.iter().filter(|p| colors.contains(&p.0)).count();
        assert_eq!(found, 5);
        assert_eq!(centres[..5].iter().map(|p| p.0).collect::<Vec<_>>(), colors);
        assert_eq!(centres[5], pixel(WHITE));
    }
}
