//! The right half of the paper's Figure 4: one row per query image, the query in the first
//! column and, past a separating rule, the images nearest to it left to right, each with a
//! caption under it.

use super::{FONT, draw_on, fit, pixel, thumbnail, write};
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub struct Neighbours {
    pub query: RgbImage,
    pub caption: String,
    /// Nearest first: image, caption.
    pub found: Vec<(RgbImage, String)>,
}

/// Space around a cell's contents.
pub const PAD: u32 = 6;
/// Side of each thumbnail, whose top-left corner is at (`PAD`, `PAD`) in its cell.
pub const THUMB: u32 = 128;
/// Height of the caption's line under the thumbnail.
pub const LINE: u32 = 16;
pub const CELL_W: u32 = THUMB + 2 * PAD;
/// Row r's cells start at y = `r * CELL_H`.
pub const CELL_H: u32 = PAD + THUMB + 2 + LINE + PAD;
/// The gap between the query column (x from 0 to `CELL_W`) and the neighbours, with a rule
/// down its middle.
pub const SEP: u32 = 14;
/// Neighbour j's cell starts at x = `NEIGHBOURS_LEFT + j * CELL_W`.
pub const NEIGHBOURS_LEFT: u32 = CELL_W + SEP;

const TEXT_PX: f64 = 12.0;
const INK: RGBColor = RGBColor(30, 30, 30);
/// The rule between the queries and their neighbours.
pub const RULE: RGBColor = RGBColor(120, 120, 120);

/// The rows as one picture, as wide as the row with the most neighbours.
pub fn render_neighbours(rows: &[Neighbours]) -> RgbImage {
    let most = rows.iter().map(|r| r.found.len()).max().unwrap_or(0) as u32;
    let (w, h) = (
        NEIGHBOURS_LEFT + most * CELL_W,
        rows.len().max(1) as u32 * CELL_H,
    );
    let mut img = RgbImage::from_pixel(w, h, pixel(WHITE));
    // Each cell: its top-left corner, image and caption.
    let cells = || {
        rows.iter().enumerate().flat_map(|(r, row)| {
            let y = r as u32 * CELL_H;
            let query = (0, y, &row.query, &row.caption);
            let found = row.found.iter().enumerate();
            let found = found.map(move |(j, (img, caption))| {
                (NEIGHBOURS_LEFT + j as u32 * CELL_W, y, img, caption)
            });
            std::iter::once(query).chain(found)
        })
    };
    for (x, y, image, _) in cells() {
        let thumb = thumbnail(image, THUMB);
        image::imageops::replace(&mut img, &thumb, (x + PAD).into(), (y + PAD).into());
    }
    draw_on(&mut img, |canvas| {
        let rule_x = (CELL_W + SEP / 2) as i32;
        let rule = [(rule_x - 1, 0), (rule_x + 1, h as i32)];
        canvas.draw(&Rectangle::new(rule, RULE.filled()))?;
        let centre = Pos::new(HPos::Center, VPos::Top);
        let style = (FONT, TEXT_PX).into_font().color(&INK).pos(centre);
        for (x, y, _, caption) in cells() {
            let text = fit(canvas, caption, &style, CELL_W - 4)?;
            let at = (
                (x + CELL_W / 2) as i32,
                (y + PAD + THUMB + 2 + LINE - 4) as i32,
            );
            write(canvas, &text, &style, at)?;
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
        RgbImage::from_pixel(80, 100, Rgb(color))
    }

    /// A query of `color` and `n` neighbours of colours derived from it and their rank.
    fn row(color: [u8; 3], n: u8) -> Neighbours {
        let found = (0..n).map(|j| (solid([color[0], 40 * j, 255 - color[0]]), format!("{j}")));
        Neighbours {
            query: solid(color),
            caption: "query".into(),
            found: found.collect(),
        }
    }

    /// The thumbnail centre of the cell whose top-left corner is at (`x`, `y`).
    fn centre(img: &RgbImage, x: u32, y: u32) -> [u8; 3] {
        img.get_pixel(x + PAD + THUMB / 2, y + PAD + THUMB / 2).0
    }

    #[test]
    fn picture_is_as_wide_as_the_longest_row() {
        let rows = [row([10, 0, 0], 6), row([20, 0, 0], 6), row([30, 0, 0], 2)];
        let img = render_neighbours(&rows);
        assert_eq!(img.dimensions(), (NEIGHBOURS_LEFT + 6 * CELL_W, 3 * CELL_H));
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("neighbours.png");
        crate::viz::save_png(&png, &render_neighbours(&rows[2..])).unwrap();
        let read = image::open(&png).unwrap().to_rgb8();
        assert_eq!(read.dimensions(), (NEIGHBOURS_LEFT + 2 * CELL_W, CELL_H));
    }

    #[test]
    fn images_sit_in_their_columns() {
        let rows = [row([100, 0, 0], 4), row([200, 0, 0], 1)];
        let img = render_neighbours(&rows);
        for (r, want) in rows.iter().enumerate() {
            let y = r as u32 * CELL_H;
            assert_eq!(centre(&img, 0, y), want.query.get_pixel(0, 0).0);
            // Each neighbour in its column, nearest first; white past the row's last.
            let shown: Vec<_> = (0..4)
                .map(|j| centre(&img, NEIGHBOURS_LEFT + j * CELL_W, y))
                .collect();
            let colours = want.found.iter().map(|(i, _)| i.get_pixel(0, 0).0);
            let expected: Vec<_> = colours.chain([[255; 3]; 4]).take(4).collect();
            assert_eq!(shown, expected, "row {r}");
        }
        // The rule runs down the whole gap between the queries and the neighbours.
        let rule_x = CELL_W + SEP / 2;
        assert!((0..img.height()).all(|y| *img.get_pixel(rule_x, y) == pixel(RULE)));
        assert_eq!(*img.get_pixel(CELL_W + 1, CELL_H / 2), pixel(WHITE));
    }
}
