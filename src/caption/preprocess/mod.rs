//! Image file or frame -> the encoder's input tensor, matching the torchvision-over-PIL pipeline CLIP was trained
//! with (docs/bundle-format.md, "Preprocessing"): decoding with size limits checked before any pixel is decoded,
//! EXIF orientation, then resize (`resample`, Pillow's bicubic bit for bit), centre crop and normalise.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

mod resample;

use resample::{Window, resize_window};

/// Largest accepted side and area: beyond them decoding alone could exhaust a small device's memory.
pub(crate) const MAX_SIDE: u32 = 16384;
pub(crate) const MAX_PIXELS: u64 = 100_000_000;
/// Decoded buffer bound: `MAX_PIXELS` of 16-bit RGBA.
const MAX_DECODED_BYTES: u64 = MAX_PIXELS * 8;

#[derive(Debug, Clone)]
pub(crate) struct Preprocessor {
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocessor {
    /// Resize (short side to `size`), centre crop and normalise: a `[3, size, size]` tensor, channels first.
    pub fn tensor(&self, image: &RgbImage) -> Vec<f32> {
        let s = self.size;
        let (w, h) = image.dimensions();
        // torchvision: the long side is int(size * long / short), i.e. floored.
        let (rw, rh) = if w <= h {
            (s, (u64::from(s) * u64::from(h) / u64::from(w)) as u32)
        } else {
            ((u64::from(s) * u64::from(w) / u64::from(h)) as u32, s)
        };
        let crop = Window {
            left: centre_offset(rw, s),
            top: centre_offset(rh, s),
            width: s,
            height: s,
        };
        let pixels = resize_window(image, rw, rh, crop);
        let plane = (s * s) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in pixels.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (f32::from(px[c]) / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }
}

/// Decodes an image file, applies its EXIF orientation and converts it to 8-bit RGB (alpha dropped).
/// Dimensions are checked from the header before any pixel is decoded.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let meta = fs::metadata(path).with_context(|| format!("{}: cannot open", path.display()))?;
    ensure!(
        !meta.is_dir(),
        "{}: is a directory, not an image file",
        path.display()
    );
    ensure!(meta.len() > 0, "{}: file is empty", path.display());
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode_rgb(
        &bytes,
        &path.display().to_string(),
        ImageFormat::from_path(path).ok(),
    )
}

/// The size limits every picture meets, whatever it came from.
pub fn check_size(w: u32, h: u32, origin: &str) -> Result<()> {
    ensure!(
        w <= MAX_SIDE && h <= MAX_SIDE && u64::from(w) * u64::from(h) <= MAX_PIXELS,
        "{origin}: image is {w}x{h} pixels, larger than the {MAX_SIDE} pixels a side and {} megapixels accepted",
        MAX_PIXELS / 1_000_000
    );
    ensure!(w > 0 && h > 0, "{origin}: image has no pixels ({w}x{h})");
    Ok(())
}

/// `load_rgb` for bytes from elsewhere (an HTTP snapshot, a camera's MJPEG frame): `origin` names them in
/// errors, `hint` is the format a file name suggests.
pub fn decode_rgb(bytes: &[u8], origin: &str, hint: Option<ImageFormat>) -> Result<RgbImage> {
    ensure!(!bytes.is_empty(), "{origin}: no image data (0 bytes)");
    let mut reader = ImageReader::new(Cursor::new(bytes));
    if let Some(format) = hint {
        reader.set_format(format);
    }
    // Content wins over the extension; the extension only helps when the content is unrecognised.
    let mut reader = reader
        .with_guessed_format()
        .with_context(|| format!("{origin}: cannot read"))?;
    let Some(format) = reader.format() else {
        bail!("{origin}: not a recognised image format (expected JPEG, PNG, WebP or BMP)");
    };
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);

    let describe = |e: ImageError| describe_image_error(origin, format, e);
    let mut decoder = reader.into_decoder().map_err(describe)?;
    let (w, h) = decoder.dimensions();
    check_size(w, h, origin)?;
    ensure!(
        decoder.total_bytes() <= MAX_DECODED_BYTES,
        "{origin}: decoding needs {} MiB, more than the {} MiB accepted",
        decoder.total_bytes() >> 20,
        MAX_DECODED_BYTES >> 20
    );
    let orientation = decoder.orientation().map_err(describe)?;
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes, origin)?;
    }
    let mut image = DynamicImage::from_decoder(decoder).map_err(describe)?;
    image.apply_orientation(orientation);
    Ok(image.to_rgb8())
}

/// A camera's packed YUYV 4:2:2 frame (two pixels in four bytes: Y0 U Y1 V, each row `bytes_per_line` long) as
/// RGB, with BT.601's studio-range coefficients, which UVC webcams use for this format.
pub(crate) fn yuyv_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    bytes_per_line: u32,
    origin: &str,
) -> Result<RgbImage> {
    ensure!(
        width > 0 && height > 0,
        "{origin}: frame has no pixels ({width}x{height})"
    );
    ensure!(
        width <= MAX_SIDE
            && height <= MAX_SIDE
            && u64::from(width) * u64::from(height) <= MAX_PIXELS,
        "{origin}: frame is {width}x{height} pixels, larger than the {MAX_SIDE} pixels a side and {} megapixels \
         accepted",
        MAX_PIXELS / 1_000_000
    );
    ensure!(
        width.is_multiple_of(2),
        "{origin}: a YUYV frame's width must be even, not {width}"
    );
    let row_bytes = width as usize * 2;
    let stride = bytes_per_line as usize;
    ensure!(
        stride >= row_bytes,
        "{origin}: YUYV rows of {stride} bytes cannot hold {width} pixels ({row_bytes} bytes)"
    );
    // In u64: a driver's stride times the height can exceed a 32-bit board's usize.
    let needed = u64::from(bytes_per_line) * u64::from(height - 1) + row_bytes as u64;
    ensure!(
        data.len() as u64 >= needed,
        "{origin}: YUYV frame of {width}x{height} needs {needed} bytes, the camera sent {}",
        data.len()
    );
    let needed = needed as usize; // at most data.len()
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for row in data[..needed].chunks(stride) {
        for quad in row[..row_bytes].chunks_exact(4) {
            let (u, v) = (i32::from(quad[1]) - 128, i32::from(quad[3]) - 128);
            for y in [quad[0], quad[2]] {
                let c = 298 * (i32::from(y) - 16) + 128;
                let channel = |value: i32| (value >> 8).clamp(0, 255) as u8;
                rgb.extend([
                    channel(c + 409 * v),
                    channel(c - 100 * u - 208 * v),
                    channel(c + 516 * u),
                ]);
            }
        }
    }
    RgbImage::from_raw(width, height, rgb).context("YUYV conversion produced a wrong-sized image")
}

fn describe_image_error(origin: &str, format: ImageFormat, e: ImageError) -> anyhow::Error {
    let kind = format!("{format:?}").to_uppercase();
    match e {
        ImageError::Limits(e) => anyhow::anyhow!("{origin}: image too large to decode: {e}"),
        ImageError::Unsupported(e) => anyhow::anyhow!("{origin}: unsupported {kind} image: {e}"),
        e => anyhow::anyhow!("{origin}: not a valid {kind} image: {e}"),
    }
}

/// The JPEG decoder conceals a truncated file by filling the missing blocks, which would caption a half-grey
/// picture without a word; Pillow refuses such files, and so do we. A complete JPEG has an end-of-image marker
/// after its first scan (entropy-coded data cannot contain one: a 0xFF there is always stuffed).
fn check_jpeg_complete(bytes: &[u8], origin: &str) -> Result<()> {
    let scan = first_scan(bytes).unwrap_or(0);
    let complete = bytes[scan..].windows(2).any(|m| m == [0xFF, 0xD9]);
    ensure!(
        complete,
        "{origin}: not a valid JPEG image: the file is truncated (no end-of-image marker)"
    );
    Ok(())
}

/// Offset of the first start-of-scan marker, found by walking the segments rather than searching, because
/// metadata can hold a whole JPEG of its own (an EXIF thumbnail) with its own scan and end marker.
fn first_scan(bytes: &[u8]) -> Option<usize> {
    let mut at = 2;
    while let [0xFF, marker, ..] = bytes.get(at..)? {
        match marker {
            0xFF => at += 1, // fill byte
            0xDA => return Some(at),
            _ => {
                let len = bytes.get(at + 2..at + 4)?;
                at += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
    None
}

/// `round_half_even((size - crop) / 2)`, as torchvision's `center_crop` computes it with Python's `round`.
fn centre_offset(size: u32, crop: u32) -> u32 {
    let d = size - crop;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_scan_skips_an_embedded_thumbnail() {
        let thumbnail = [0xFF, 0xD8, 0xFF, 0xDA, 0, 2, 0xFF, 0xD9];
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1, 0, 2 + thumbnail.len() as u8];
        jpeg.extend(thumbnail);
        let scan = jpeg.len();
        jpeg.extend([0xFF, 0xDA, 0, 2, 1, 2, 3]);
        assert_eq!(first_scan(&jpeg), Some(scan));
        assert_eq!(first_scan(&jpeg[..scan - 1]), None);
    }

    #[test]
    fn centre_offset_rounds_half_to_even() {
        assert_eq!(centre_offset(224, 224), 0);
        assert_eq!(centre_offset(225, 224), 0); // 0.5 -> 0
        assert_eq!(centre_offset(227, 224), 2); // 1.5 -> 2
        assert_eq!(centre_offset(229, 224), 2); // 2.5 -> 2
        assert_eq!(centre_offset(298, 224), 37);
    }

    #[test]
    fn tensor_is_channels_first_and_normalised() {
        let p = Preprocessor {
            size: 4,
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.25, 1.0],
        };
        let img = RgbImage::from_pixel(8, 6, image::Rgb([255, 0, 51]));
        let t = p.tensor(&img);
        assert_eq!(t.len(), 48);
        assert!(t[..16].iter().all(|&v| v == 1.0));
        assert!(t[16..32].iter().all(|&v| v == -1.0));
        assert!(t[32..].iter().all(|&v| (v - 0.2).abs() < 1e-6));
    }

    #[test]
    fn yuyv_frames_convert_with_bt601_studio_range() {
        // Two rows of two pixel pairs, each row padded to 12 bytes: black | white, then red | blue.
        #[rustfmt::skip]
        let frame = [
            16, 128, 16, 128,   235, 128, 235, 128,   9, 9, 9, 9,
            82, 90, 82, 240,    41, 240, 41, 110,     9, 9, 9, 9,
        ];
        let image = yuyv_to_rgb(&frame, 4, 2, 12, "test").expect("converts");
        let pixels: Vec<[u8; 3]> = image.pixels().map(|p| p.0).collect();
        assert_eq!(
            pixels,
            [
                [0, 0, 0],
                [0, 0, 0],
                [255, 255, 255],
                [255, 255, 255],
                [255, 1, 0],
                [255, 1, 0],
                [0, 0, 255],
                [0, 0, 255]
            ]
        );
    }

    #[test]
    fn a_short_or_odd_yuyv_frame_is_an_error_that_says_why() {
        let error = |data: &[u8], w, h, stride| {
            format!(
                "{:#}",
                yuyv_to_rgb(data, w, h, stride, "/dev/video0").unwrap_err()
            )
        };
        assert_eq!(
            error(&[0; 15], 4, 2, 8),
            "/dev/video0: YUYV frame of 4x2 needs 16 bytes, the camera sent 15"
        );
        assert_eq!(
            error(&[0; 16], 3, 2, 8),
            "/dev/video0: a YUYV frame's width must be even, not 3"
        );
        assert_eq!(
            error(&[0; 16], 4, 2, 6),
            "/dev/video0: YUYV rows of 6 bytes cannot hold 4 pixels (8 bytes)"
        );
        assert!(error(&[], 20000, 2, 40000).contains("larger than the 16384 pixels a side"));
    }
}
