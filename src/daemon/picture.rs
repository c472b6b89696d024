//! The captioned picture as Home Assistant's image entity shows it: downscaled and JPEG-encoded small enough for
//! one MQTT message, since a retained picture is sent to every client that subscribes.

use std::io::Cursor;

use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};

use super::config::PictureSettings;

/// The qualities tried, best first, before the picture is made smaller.
const QUALITIES: [u8; 4] = [80, 65, 50, 35];
/// Below this longer side a picture shows nothing worth its message.
const SMALLEST_SIDE: u32 = 32;

/// `image` within `settings`' size and bytes: each quality in turn, then half the size, and so on; `None` when
/// not even the smallest fits.
pub(super) fn thumbnail(image: &RgbImage, settings: PictureSettings) -> Option<Vec<u8>> {
    let (width, height) = image.dimensions();
    let mut side = settings.size.min(width.max(height));
    while side >= SMALLEST_SIDE.min(width.max(height)) {
        let scale = f64::from(side) / f64::from(width.max(height));
        let (w, h) = (
            ((f64::from(width) * scale).round() as u32).max(1),
            ((f64::from(height) * scale).round() as u32).max(1),
        );
        let small = if (w, h) == (width, height) {
            image.clone()
        } else {
            imageops::resize(image, w, h, FilterType::Triangle)
        };
        for quality in QUALITIES {
            let mut bytes = Vec::new();
            let encoded = small.write_with_encoder(JpegEncoder::new_with_quality(
                &mut Cursor::new(&mut bytes),
                quality,
            ));
            if encoded.is_ok() && bytes.len() <= settings.max_bytes {
                return Some(bytes);
            }
        }
        if side <= SMALLEST_SIDE {
            break;
        }
        side = (side / 2).max(SMALLEST_SIDE);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture JPEG compresses badly: every pixel different.
    fn noise(width: u32, height: u32) -> RgbImage {
        let mut state = 12345u32;
        RgbImage::from_fn(width, height, |_, _| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let [a, b, c, _] = state.to_le_bytes();
            image::Rgb([a, b, c])
        })
    }

    fn decoded(bytes: &[u8]) -> RgbImage {
        image::load_from_memory(bytes).unwrap().to_rgb8()
    }

    #[test]
    fn downscaled_to_the_longer_side_keeping_the_shape() {
        let image = RgbImage::from_pixel(1920, 1080, image::Rgb([30, 120, 200]));
        let settings = PictureSettings {
            size: 640,
            max_bytes: 100_000,
        };
        let small = decoded(&thumbnail(&image, settings).unwrap());
        assert_eq!(small.dimensions(), (640, 360));
        let pixel = small.get_pixel(320, 180).0;
        assert!(
            pixel
                .iter()
                .zip([30, 120, 200])
                .all(|(&a, b)| a.abs_diff(b) <= 3),
            "{pixel:?}"
        );
        let tiny = RgbImage::new(100, 50);
        assert_eq!(
            decoded(&thumbnail(&tiny, settings).unwrap()).dimensions(),
            (100, 50),
            "never enlarged"
        );
    }

    #[test]
    fn a_picture_over_the_bytes_is_made_smaller_until_it_fits() {
        let image = noise(1280, 960);
        let max_bytes = 20_000;
        let bytes = thumbnail(
            &image,
            PictureSettings {
                size: 1280,
                max_bytes,
            },
        )
        .unwrap();
        assert!(bytes.len() <= max_bytes, "{} bytes", bytes.len());
        let (w, h) = decoded(&bytes).dimensions();
        assert!(w < 1280 && w * 3 == h * 4, "{w}x{h}");
        assert!(
            thumbnail(
                &image,
                PictureSettings {
                    size: 1280,
                    max_bytes: 100
                }
            )
            .is_none(),
            "no JPEG is 100 bytes"
        );
    }
}
