//! Pillow's bicubic resampler (`ImagingResample`), integer arithmetic and all: fixed-point taps, two passes,
//! the same roundings, so that the encoder's input matches PIL's bit for bit. A different bicubic (even a
//! "better" one) shifts the embedding and can change captions.

use image::RgbImage;

/// Pillow's fixed-point precision for 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A rectangle of the resized image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// Pillow's bicubic resize of `image` to `width` x `height`, computing only the pixels inside `window`. Each
/// output pixel depends only on its own coefficients, so this equals resizing everything and cropping.
pub(crate) fn resize_window(image: &RgbImage, width: u32, height: u32, window: Window) -> RgbImage {
    let (in_w, in_h) = image.dimensions();
    let horizontal = Coefficients::new(
        in_w as usize,
        width as usize,
        window.left as usize,
        window.width as usize,
    );
    let vertical = Coefficients::new(
        in_h as usize,
        height as usize,
        window.top as usize,
        window.height as usize,
    );
    // Pillow skips a pass whose size does not change: that pass would be the identity anyway.
    let rows = if width == in_w {
        crop_columns(image, window.left, window.width)
    } else {
        horizontal.apply_rows(image)
    };
    if height == in_h {
        crop_rows(&rows, window.top, window.height)
    } else {
        vertical.apply_columns(&rows)
    }
}

fn crop_columns(image: &RgbImage, left: u32, width: u32) -> RgbImage {
    RgbImage::from_fn(width, image.height(), |x, y| *image.get_pixel(left + x, y))
}

fn crop_rows(image: &RgbImage, top: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(image.width(), height, |x, y| *image.get_pixel(x, top + y))
}

/// Pillow's cubic kernel with a = -0.5.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// One pass's fixed-point taps for a run of consecutive output positions (Pillow's `precompute_coeffs`
/// followed by `normalize_coeffs_8bpc`).
struct Coefficients {
    /// Per output position: first input index and the taps.
    taps: Vec<(usize, Vec<i32>)>,
}

impl Coefficients {
    fn new(in_size: usize, out_size: usize, first: usize, count: usize) -> Coefficients {
        const SUPPORT: f64 = 2.0;
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = SUPPORT * filter_scale;
        // Pillow multiplies by the reciprocal; dividing instead rounds differently.
        let inverse_scale = 1.0 / filter_scale;
        let taps = (first..first + count)
            .map(|xx| {
                let center = (xx as f64 + 0.5) * scale;
                // `as` truncates toward zero, as C's (int) cast does.
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
                let weights: Vec<f64> = (xmin..xmax.max(xmin))
                    .map(|x| bicubic((x as f64 - center + 0.5) * inverse_scale))
                    .collect();
                let total: f64 = weights.iter().sum();
                let fixed = weights
                    .iter()
                    .map(|&w| {
                        let w = if total != 0.0 { w / total } else { w };
                        let scaled = w * f64::from(1u32 << PRECISION_BITS);
                        (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                    })
                    .collect();
                (xmin, fixed)
            })
            .collect();
        Coefficients { taps }
    }

    /// Horizontal pass: every row, the selected output columns.
    fn apply_rows(&self, image: &RgbImage) -> RgbImage {
        let (w, h) = (self.taps.len() as u32, image.height());
        let src = image.as_raw();
        let stride = image.width() as usize * 3;
        let mut out = RgbImage::new(w, h);
        for (y, row) in out.rows_mut().enumerate() {
            let line = &src[y * stride..(y + 1) * stride];
            for (px, (xmin, k)) in row.zip(&self.taps) {
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (i, &weight) in k.iter().enumerate() {
                    let p = &line[(xmin + i) * 3..(xmin + i) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += i32::from(p[c]) * weight;
                    }
                }
                px.0 = acc.map(clip8);
            }
        }
        out
    }

    /// Vertical pass: the selected output rows, every column.
    fn apply_columns(&self, image: &RgbImage) -> RgbImage {
        let w = image.width() as usize;
        let src = image.as_raw();
        let stride = w * 3;
        let mut out = RgbImage::new(w as u32, self.taps.len() as u32);
        for ((ymin, k), row) in self.taps.iter().zip(out.rows_mut()) {
            for (x, px) in row.enumerate() {
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (i, &weight) in k.iter().enumerate() {
                    let at = (ymin + i) * stride + x * 3;
                    for c in 0..3 {
                        acc[c] += i32::from(src[at + c]) * weight;
                    }
                }
                px.0 = acc.map(clip8);
            }
        }
        out
    }
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(image: &RgbImage, w: u32, h: u32) -> RgbImage {
        resize_window(
            image,
            w,
            h,
            Window {
                left: 0,
                top: 0,
                width: w,
                height: h,
            },
        )
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 + y * 3) as u8,
                (x * y) as u8,
                255u8.wrapping_sub((x * 5) as u8),
            ])
        })
    }

    #[test]
    fn kernel_matches_pillow() {
        assert_eq!(bicubic(0.0), 1.0);
        assert_eq!(bicubic(1.0), 0.0);
        assert_eq!(bicubic(2.0), 0.0);
        assert!((bicubic(0.5) - 0.5625).abs() < 1e-12);
        assert!((bicubic(1.5) + 0.0625).abs() < 1e-12);
    }

    #[test]
    fn taps_sum_to_one_in_fixed_point() {
        for (i, o) in [(640, 224), (224, 640), (1000, 224), (3, 224), (1, 224)] {
            let c = Coefficients::new(i, o, 0, o);
            for (xmin, k) in &c.taps {
                let sum: i32 = k.iter().sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i32,
                    "{i}->{o}: {sum}"
                );
                assert!(xmin + k.len() <= i);
            }
        }
    }

    #[test]
    fn uniform_image_stays_uniform() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        let out = full(&img, 224, 139);
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
        let one = RgbImage::from_pixel(1, 1, image::Rgb([3, 4, 5]));
        assert!(full(&one, 5, 5).pixels().all(|p| p.0 == [3, 4, 5]));
    }

    #[test]
    fn window_equals_full_resize_then_crop() {
        let img = gradient(97, 61);
        let whole = full(&img, 50, 31);
        let win = resize_window(
            &img,
            50,
            31,
            Window {
                left: 7,
                top: 3,
                width: 31,
                height: 20,
            },
        );
        for (x, y, p) in win.enumerate_pixels() {
            assert_eq!(p, whole.get_pixel(x + 7, y + 3));
        }
    }

    #[test]
    fn same_size_pass_is_identity() {
        let img = gradient(40, 30);
        assert_eq!(full(&img, 40, 30), img);
    }
}
