//! Decoding and the paper's base image: bytes → RGB → centred square → `base`×`base`.
//!
//! The format is detected from the content (ImageNet holds a PNG named `.JPEG`); JPEG (baseline
//! or progressive; RGB, grayscale or CMYK) and PNG are read, and every image becomes 8-bit RGB:
//! gray is replicated, CMYK converted by the JPEG decoder, alpha dropped.

use anyhow::{Result, anyhow, bail, ensure};
use fast_image_resize as fir;
use image::{ImageFormat, RgbImage};
use std::cell::RefCell;

/// Decodes an encoded image to 8-bit RGB. A file that is not JPEG or PNG, is corrupt, or is cut
/// short is an error saying which.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    let format = image::guess_format(bytes).map_err(|_| {
        anyhow!(
            "not a JPEG or PNG image ({} bytes starting {:02x?})",
            bytes.len(),
            &bytes[..bytes.len().min(4)]
        )
    })?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        bail!("{format:?} images are not read (JPEG and PNG are)");
    }
    // The decoders are fuzzed but not proven: a panic on hostile input is turned into this file's
    // error so the loader can skip it instead of taking training down.
    let decoded = std::panic::catch_unwind(|| match format {
        ImageFormat::Jpeg => decode_jpeg(bytes),
        _ => image::load_from_memory_with_format(bytes, format)
            .map(|image| image.into_rgb8())
            .map_err(|e| e.to_string()),
    })
    .map_err(|_| anyhow!("the image decoder panicked on this file"))?;
    let complete = match format {
        ImageFormat::Jpeg => check_jpeg_complete(bytes),
        _ => Ok(()),
    };
    let name = if format == ImageFormat::Jpeg {
        "JPEG"
    } else {
        "PNG"
    };
    let rgb = match (decoded, complete) {
        (Ok(image), Ok(())) => image,
        (Ok(_), Err(broken)) => return Err(broken),
        (Err(e), Ok(())) => bail!("corrupt {name}: {e}"),
        (Err(e), Err(broken)) => bail!("{broken}; the decoder also fails: {e}"),
    };
    ensure!(rgb.width() > 0 && rgb.height() > 0, "image has no pixels");
    Ok(rgb)
}

/// zune-jpeg straight to RGB (it converts CMYK and YCCK itself, and expands grayscale), within
/// its default dimension limit (16384 a side), so a header claiming more allocates nothing.
fn decode_jpeg(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = decoder.decode().map_err(|e| format!("{e:?}"))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| "no frame header".to_string())?;
    let pixels = match pixels.len() {
        n if n == w * h * 3 => pixels,
        // A decoder that kept one channel: replicate it.
        n if n == w * h => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        n => return Err(format!("{n} bytes decoded for a {w}x{h} image")),
    };
    RgbImage::from_raw(w as u32, h as u32, pixels).ok_or_else(|| "no pixels".to_string())
}

thread_local! {
    /// Each thread's resizer keeps its scratch buffers between images.
    static RESIZER: RefCell<fir::Resizer> = RefCell::new(fir::Resizer::new());
}

/// The paper's preprocessing: the centred square of side `min(w, h)`, resized to `base`×`base`
/// with a bilinear convolution whose support is widened by the scale factor when shrinking (so
/// it averages rather than aliases, as Pillow's and the image crate's do), by
/// `fast_image_resize`'s SIMD kernels. The filter reads the source pixels just outside the square
/// as it would resizing the whole image, so this is the paper's "shorter side to 256, then the
/// central 256×256" up to rounding the crop's offset to a whole source pixel, and it resizes
/// fewer pixels. Returns HWC `u8`, `base * base * 3` bytes.
pub fn to_base(image: &RgbImage, base: usize) -> Vec<u8> {
    let (w, h) = image.dimensions();
    let side = w.min(h);
    let (x0, y0) = ((w - side) / 2, (h - side) / 2);
    if side as usize == base {
        return image::imageops::crop_imm(image, x0, y0, side, side)
            .to_image()
            .into_raw();
    }
    let src = fir::images::ImageRef::new(w, h, image.as_raw(), fir::PixelType::U8x3)
        .expect("an RgbImage holds w*h*3 bytes");
    let mut dst = fir::images::Image::new(base as u32, base as u32, fir::PixelType::U8x3);
    let options = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear))
        .crop(x0 as f64, y0 as f64, side as f64, side as f64);
    RESIZER
        .with(|r| r.borrow_mut().resize(&src, &mut dst, &options))
        .expect("same pixel type, non-empty images");
    dst.into_vec()
}

/// [`decode_rgb`] then [`to_base`] (a packed image, already `base`×`base`, is not copied).
pub fn decode_base(bytes: &[u8], base: usize) -> Result<Vec<u8>> {
    let rgb = decode_rgb(bytes)?;
    if (rgb.width() as usize, rgb.height() as usize) == (base, base) {
        return Ok(rgb.into_raw());
    }
    Ok(to_base(&rgb, base))
}

/// The JPEG decoder is lenient: data cut short decodes, the missing part grey, and so do damaged
/// bytes. Both are caught here instead, by walking the marker segments (skipping each scan's
/// entropy-coded data) until the end-of-image marker. Running off the end of the bytes means
/// truncation when no end-of-image marker follows the first scan's start (it cannot occur inside
/// entropy-coded data, so a cut file has none there); when one does, the walk was thrown off by
/// damaged bytes in the middle, and the file is called corrupt. Stray bytes between segments are
/// stepped over, as libjpeg does, and anything after the end-of-image marker is ignored.
fn check_jpeg_complete(bytes: &[u8]) -> Result<()> {
    let n = bytes.len();
    walk_jpeg_segments(bytes).map_err(|()| {
        let scan = bytes.windows(2).position(|w| w == [0xFF, 0xDA]);
        let end_marker = scan.and_then(|s| bytes[s..].windows(2).position(|w| w == [0xFF, 0xD9]));
        match end_marker {
            Some(_) => anyhow!(
                "corrupt JPEG: damaged bytes in the middle break its structure before the end-of-image marker"
            ),
            None => anyhow!("truncated JPEG: {n} bytes end before the end-of-image marker"),
        }
    })
}

/// Follows the marker segments to the end-of-image marker: `Err` if the bytes run out first.
fn walk_jpeg_segments(bytes: &[u8]) -> std::result::Result<(), ()> {
    let n = bytes.len();
    let truncated = || ();
    let mut i = 2; // after the start-of-image marker
    loop {
        // The next marker: 0xFF (any number of fill bytes) and a code.
        i += bytes
            .get(i..)
            .and_then(|b| memchr::memchr(0xFF, b))
            .ok_or_else(truncated)?;
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let code = *bytes.get(i).ok_or_else(truncated)?;
        i += 1;
        match code {
            0xD9 => return Ok(()),
            // Restart markers, TEM, and a stuffed zero met outside a scan: no length field.
            0xD0..=0xD7 | 0x01 | 0x00 => continue,
            _ => {}
        }
        let len = bytes.get(i..i + 2).ok_or_else(truncated)?;
        i += u16::from_be_bytes([len[0], len[1]]) as usize;
        if i > n {
            return Err(());
        }
        if code == 0xDA {
            // Entropy-coded data: 0xFF is followed by a stuffed 0x00 or a restart marker until
            // the next real marker.
            loop {
                i += memchr::memchr(0xFF, &bytes[i..]).ok_or_else(truncated)?;
                match bytes.get(i + 1) {
                    None => return Err(()),
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn complete_jpeg_passes_and_every_truncation_is_caught() {
        let full = jpeg(40, 30);
        check_jpeg_complete(&full).unwrap();
        // Trailing bytes after the end-of-image marker are allowed.
        let mut trailing = full.clone();
        trailing.extend_from_slice(b"trailer\xff\xda");
        check_jpeg_complete(&trailing).unwrap();
        for cut in (3..full.len() - 1).step_by(7) {
            let err = check_jpeg_complete(&full[..cut]).unwrap_err().to_string();
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn damage_in_the_middle_is_corrupt_not_truncated() {
        let full = jpeg(64, 48);
        let scan = full.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        // A marker-like pair with a length that jumps past the end, inside the scan data.
        let mut damaged = full.clone();
        let at = scan + (full.len() - scan) / 2;
        damaged[at..at + 4].copy_from_slice(&[0xFF, 0xC4, 0xFF, 0xF0]);
        let e = check_jpeg_complete(&damaged).unwrap_err().to_string();
        assert!(
            e.starts_with("corrupt JPEG") && !e.contains("truncated"),
            "{e}"
        );
        // The same damage in a file that is also cut short is still truncation.
        let e = check_jpeg_complete(&damaged[..at + 10])
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn base_image_is_the_resized_centre_square() {
        // A 60x40 image whose left and right 10 columns are red: the centre square is all blue.
        let img = RgbImage::from_fn(60, 40, |x, _| {
            if (10..50).contains(&x) {
                image::Rgb([0, 0, 255])
            } else {
                image::Rgb([255, 0, 0])
            }
        });
        let base = to_base(&img, 16);
        assert_eq!(base.len(), 16 * 16 * 3);
        // The filter reaches 2.5 source pixels, one output pixel, past the square, as resizing
        // the whole image and then cropping would: only the edge columns may see red.
        for (i, p) in base.chunks(3).enumerate() {
            let x = i % 16;
            if (1..15).contains(&x) {
                assert_eq!(p, [0, 0, 255], "column {x}");
            } else {
                assert!(p[2] > 128 && p[0] < 128, "column {x}: {p:?}");
            }
        }
        // Already square and at the base size: the pixels pass through untouched.
        let small = RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8, y as u8, 3]));
        assert_eq!(to_base(&small, 8), small.into_raw());
    }
}
