//! Helpers shared by the data pipeline's tests.

use std::path::{Path, PathBuf};

/// The shared test data at `../shared/data/<relative>` from the repository root, or where the
/// environment variable `env` points. `None`, after one printed line, where it is absent.
pub fn shared_data(env: &str, relative: &str) -> Option<PathBuf> {
    let path = match std::env::var_os(env) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data")
            .join(relative),
    };
    if path.exists() {
        Some(path)
    } else {
        println!(
            "SKIP: {} not found (set {env} to point at it)",
            path.display()
        );
        None
    }
}

/// A JPEG of a `w`×`h` RGB image with a smooth pattern, at quality 90.
pub fn rgb_jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("encoding a JPEG in memory");
    out
}
