//! The pictures `predict --figure` and `similar --figure` draw (the paper's Figure 4, left and
//! right): the images read back from their paths, laid out by `viz`, written atomically.

use crate::features::similar::Found;
use crate::viz::neighbours::{Neighbours, render_neighbours};
use crate::viz::predictions::{Prediction, render_predictions};
use anyhow::{Result, ensure};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Refuses a figure name that is not a PNG before any work is done.
pub fn check_png_name(path: &Path) -> Result<()> {
    ensure!(
        path.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png")),
        "{}: figures are PNG files (name it .png)",
        path.display()
    );
    Ok(())
}

/// The image at `path` (up to `max_bytes`), or a grey square where it cannot be read (a
/// gallery file's paths may be relative to where it was made, or gone since).
pub fn picture(path: &str, max_bytes: u64) -> RgbImage {
    crate::files::read_capped(Path::new(path), max_bytes)
        .ok()
        .and_then(|b| image::load_from_memory(&b).ok())
        .map(|i| i.to_rgb8())
        .unwrap_or_else(|| {
            eprintln!("note: {path} could not be read for the figure; drawn grey");
            RgbImage::from_pixel(64, 64, Rgb([200, 200, 200]))
        })
}

/// Each query beside its nearest gallery images, captioned with labels and distances.
pub fn neighbours(found: &Found, max_bytes: u64) -> RgbImage {
    let rows: Vec<Neighbours> = found
        .queries
        .iter()
        .zip(&found.hits)
        .map(|((path, label), hits)| Neighbours {
            query: picture(path, max_bytes),
            caption: caption(path, label),
            found: hits
                .iter()
                .map(|h| {
                    let (p, l) = &found.gallery[h.index];
                    let name = if l.is_empty() {
                        file_name(p)
                    } else {
                        l.clone()
                    };
                    (picture(p, max_bytes), format!("{name} {:.1}", h.distance))
                })
                .collect(),
        })
        .collect();
    render_neighbours(&rows)
}

/// A picture's caption: its label, else its file name.
pub fn caption(path: &str, label: &str) -> String {
    if label.is_empty() {
        file_name(path)
    } else {
        label.to_string()
    }
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// An image's place in the left half: its most likely classes (name, probability), most
/// likely first, and its true class's name where known.
pub struct Ranked<'a> {
    pub path: &'a Path,
    pub top: Vec<(String, f32)>,
    pub truth: Option<String>,
}

/// Each image with its top classes as bars.
pub fn predictions(cells: Vec<Ranked>, max_bytes: u64) -> RgbImage {
    let cells: Vec<Prediction> = cells
        .into_iter()
        .map(|r| {
            let path = r.path.display().to_string();
            Prediction {
                image: picture(&path, max_bytes),
                caption: file_name(&path),
                top: r.top,
                truth: r.truth,
            }
        })
        .collect();
    // The paper's eight in one row of four and a second of four.
    render_predictions(&cells, cells.len().clamp(1, 4))
}
