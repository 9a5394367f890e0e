//! Pictures: training curves (`chart`), the conv1 filter grid of the paper's Figure 3
//! (`filters`), and the two halves of its Figure 4: top-k predictions (`predictions`) and nearest
//! neighbours (`neighbours`). Text and shapes are drawn with plotters into RGB images.

pub mod chart;
pub mod filters;
pub mod neighbours;
pub mod predictions;

use image::RgbImage;
use image::imageops::FilterType;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::Once;

/// The font family every picture's text is drawn in: plotters' own default family name, so
/// its axis labels and legends find the compiled-in font too.
pub const FONT: &str = "sans-serif";

/// A plotters drawing area over an image's pixels.
pub(crate) type Canvas<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Registers Noto Sans (compiled in) as [`FONT`]: plotters' ab_glyph text has no font until
/// one is registered, and the table is global, so once per process.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let font = notosans::REGULAR_TTF;
        if plotters::style::register_font(FONT, FontStyle::Normal, font).is_err() {
            panic!("the compiled-in Noto Sans does not parse");
        }
    });
}

/// Runs `draw` on a canvas over `img`, keeping what `img` holds already (thumbnails pasted
/// before). Drawing in memory fails only on a font that cannot lay out text, a bug, so it
/// panics rather than returning an error.
pub(crate) fn draw_on(img: &mut RgbImage, draw: impl FnOnce(&Canvas) -> anyhow::Result<()>) {
    register_font();
    let size = img.dimensions();
    let canvas = BitMapBackend::with_buffer(img, size).into_drawing_area();
    draw(&canvas).expect("drawing in memory");
    canvas.present().expect("drawing in memory");
}

/// Writes `text` in `style` (whose `pos` says where `x` is: left, centre or right) with its
/// baseline at `baseline`. plotters' ab_glyph text puts the baseline half the font size below a
/// top anchor, so a line's place is best said by its baseline.
pub(crate) fn write(
    canvas: &Canvas,
    text: &str,
    style: &TextStyle,
    (x, baseline): (i32, i32),
) -> anyhow::Result<()> {
    let top = baseline - (style.font.get_size() / 2.0).round() as i32;
    canvas.draw_text(text, style, (x, top))?;
    Ok(())
}

/// A plotters colour as an image pixel.
pub(crate) fn pixel(color: RGBColor) -> image::Rgb<u8> {
    image::Rgb([color.0, color.1, color.2])
}

/// `text` shortened with an ellipsis to at most `width` pixels in `style`.
pub(crate) fn fit(
    canvas: &Canvas,
    text: &str,
    style: &TextStyle,
    width: u32,
) -> anyhow::Result<String> {
    let mut chars: Vec<char> = text.chars().collect();
    let mut shown = text.to_string();
    while !chars.is_empty() && canvas.estimate_text_size(&shown, style)?.0 > width {
        chars.pop();
        shown = chars.iter().collect::<String>() + "…";
    }
    Ok(shown)
}

/// Writes `img` as a PNG: the whole file or, on an error, the file as it was (every picture
/// the engine draws goes through here).
pub fn save_png(path: &std::path::Path, img: &RgbImage) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    crate::files::write_atomic(path, &bytes)
}

/// The centre square of `img`, resized to `side` x `side` (Catmull-Rom: sharp when shrinking
/// photographs, smooth when enlarging small ones).
pub fn thumbnail(img: &RgbImage, side: u32) -> RgbImage {
    let s = img.width().min(img.height());
    if s == 0 {
        return RgbImage::new(side, side);
    }
    let (x, y) = ((img.width() - s) / 2, (img.height() - s) / 2);
    let square = image::imageops::crop_imm(img, x, y, s, s).to_image();
    image::imageops::resize(&square, side, side, FilterType::CatmullRom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn thumbnail_is_the_centre_square() {
        // A wide image: red bands left and right, green in the centre square.
        let mut img = RgbImage::from_pixel(300, 100, Rgb([255, 0, 0]));
        for y in 0..100 {
            for x in 100..200 {
                img.put_pixel(x, y, Rgb([0, 255, 0]));
            }
        }
        let t = thumbnail(&img, 40);
        assert_eq!(t.dimensions(), (40, 40));
        assert!(t.pixels().all(|p| *p == Rgb([0, 255, 0])));
        assert_eq!(thumbnail(&RgbImage::new(0, 5), 8).dimensions(), (8, 8));
    }

    #[test]
    fn long_text_is_cut_to_fit() {
        let mut img = RgbImage::new(200, 50);
        draw_on(&mut img, |canvas| {
            let style = TextStyle::from((FONT, 14));
            let long = "a very long label that cannot fit in sixty pixels";
            let cut = fit(canvas, long, &style, 60)?;
            assert!(cut.ends_with('…') && cut.len() < long.len(), "{cut}");
            assert!(canvas.estimate_text_size(&cut, &style)?.0 <= 60);
            assert_eq!(fit(canvas, "short", &style, 60)?, "short");
            Ok(())
        });
    }
}
