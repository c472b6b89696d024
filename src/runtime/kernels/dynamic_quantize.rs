//! ONNX's DynamicQuantizeLinear to u8, vectorised: tract-onnx's runs before every int8 matrix product and folds
//! the range over a dynamic-rank array view, rounding through a libm call per element.
//! `rewrite::fast_dynamic_quantization` puts this one in its place; the outputs are the same bit for bit.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// ONNX's DynamicQuantizeLinear to u8 over f32: `scale = (max(x, 0) - min(x, 0)) / 255`,
/// `zero_point = saturate(round(-min / scale))`, `y = saturate(round(x / scale) + zero_point)`, rounding half to even.
/// Outputs: `y`, `scale` and `zero_point`, the last two as scalars.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct DynamicQuantizeU8;

impl Op for DynamicQuantizeU8 {
    fn name(&self) -> StaticName {
        "DynamicQuantizeU8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for DynamicQuantizeU8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs[0].try_as_plain_ram()?;
        let xs = input.as_slice::<f32>()?;
        let mut quantized =
            unsafe { Tensor::uninitialized_dt(u8::datum_type(), inputs[0].shape())? };
        let (scale, zero_point) =
            quantize_u8(xs, quantized.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?);
        Ok(tvec!(
            quantized.into_tvalue(),
            tensor0(scale).into_tvalue(),
            tensor0(zero_point).into_tvalue()
        ))
    }
}

impl TypedOp for DynamicQuantizeU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(
            u8::fact(inputs[0].shape.clone()),
            f32::fact([0usize; 0]),
            u8::fact([0usize; 0])
        ))
    }

    as_op!();
}

/// Lanes of the range and rounding loops: wide enough for the compiler to keep them in vector registers.
const LANES: usize = 16;

widest_vectors! {
    /// `xs` quantized into `ys`; returns the scale and zero point.
    fn quantize_u8(xs: &[f32], ys: &mut [u8]) -> (f32, u8) {
        let (scale, zero_point) = scale_and_zero_point(xs);
        quantize(xs, scale, zero_point, ys);
        (scale, zero_point)
    }
}

/// The range, widened to include 0, as `scale` and `zero_point`. NaNs are ignored, as ONNX Runtime and tract do.
#[inline(always)]
fn scale_and_zero_point(xs: &[f32]) -> (f32, u8) {
    let (mut low, mut high) = ([0f32; LANES], [0f32; LANES]);
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            low[lane] = if chunk[lane] < low[lane] {
                chunk[lane]
            } else {
                low[lane]
            };
            high[lane] = if chunk[lane] > high[lane] {
                chunk[lane]
            } else {
                high[lane]
            };
        }
    }
    let fold = |lanes: &[f32], keep: fn(f32, f32) -> bool| {
        lanes
            .iter()
            .chain(tail)
            .fold(0f32, |a, &x| if keep(x, a) { x } else { a })
    };
    let min = fold(&low, |x, a| x < a);
    let max = fold(&high, |x, a| x > a);
    let scale = (max - min) / 255.0;
    let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
    (scale, zero_point)
}

/// Rounds half to even. Adding and removing 1.5 * 2^23 leaves no fraction bits, and the FPU's default rounding is
/// to nearest even; exact for |x| < 2^22, and `x / scale` is within +-255 by construction. Unlike `round_ties_even`,
/// which is a libm call on x86-64's baseline, it vectorises.
#[inline(always)]
fn round_half_even(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

#[inline(always)]
fn quantize(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    let zero_point = i32::from(zero_point);
    // A division that reads or yields a subnormal takes the CPU's microcode path, 20 times slower, and activations
    // near 0 (GELU's outputs for negative inputs) divide to subnormals. Any |x| under a quarter of the scale rounds
    // to 0 anyway, so it is made 0 before dividing.
    let negligible = scale * 0.25;
    // The division is as ONNX specifies it: multiplying by the reciprocal rounds some values to the other integer.
    // A NaN becomes the zero point, as in tract's version (`NaN as i32` is 0).
    let one = |x: f32| {
        let x = if x.abs() < negligible { 0.0 } else { x };
        let rounded = round_half_even((x / scale).clamp(-512.0, 512.0));
        let rounded = if rounded.is_nan() { 0.0 } else { rounded };
        // SAFETY: an integer in [-512, 512], so the conversion needs no saturation, and vectorises without it.
        let rounded: i32 = unsafe { rounded.to_int_unchecked() };
        (rounded + zero_point).clamp(0, 255) as u8
    };
    let mut x_chunks = xs.chunks_exact(LANES);
    let mut y_chunks = ys.chunks_exact_mut(LANES);
    for (x, y) in (&mut x_chunks).zip(&mut y_chunks) {
        for lane in 0..LANES {
            y[lane] = one(x[lane]);
        }
    }
    for (x, y) in x_chunks.remainder().iter().zip(y_chunks.into_remainder()) {
        *y = one(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ONNX's DynamicQuantizeLinear as tract-onnx computes it, one element at a time.
    fn reference(xs: &[f32]) -> (Vec<u8>, f32, u8) {
        let min = xs.iter().fold(0f32, |a, &x| if x < a { x } else { a });
        let max = xs.iter().fold(0f32, |a, &x| if x > a { x } else { a });
        let scale = (max - min) / 255.0;
        let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        let ys = xs
            .iter()
            .map(|x| {
                ((x / scale).round_ties_even() as i32 + i32::from(zero_point)).clamp(0, 255) as u8
            })
            .collect();
        (ys, scale, zero_point)
    }

    fn run_quantize(xs: &[f32]) -> TractResult<(Vec<u8>, f32, u8)> {
        let input = Tensor::from_shape(&[xs.len()], xs)?.into_tvalue();
        let outputs = DynamicQuantizeU8.eval(&EvalContext::out_of_plan(), tvec![input])?;
        Ok((
            outputs[0].try_as_plain_ram()?.as_slice::<u8>()?.to_vec(),
            outputs[1].try_as_plain_ram()?.as_slice::<f32>()?[0],
            outputs[2].try_as_plain_ram()?.as_slice::<u8>()?[0],
        ))
    }

    #[test]
    fn dynamic_quantization_matches_onnx_bit_for_bit() -> TractResult<()> {
        // Pseudo-random activations of several ranges and lengths (tails shorter than the lanes included).
        let mut state = 0x2545_f491_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as f32 / u32::MAX as f32
        };
        let mut cases: Vec<Vec<f32>> = vec![
            vec![0., 2., -3., -2.5, 1.34, 0.5], // ONNX's own example: 153, 255, 0, 26, 221, 179
            vec![-127., 128., 0.5, 1.5, 2.5, -0.5, -1.5, 126.5], // ties on a scale of exactly 1
            vec![0.0; 37],
            vec![1.0, 2.0, f32::NAN, 3.0, -1.0],
            vec![-1e-40, 3.0, 1e-39, -2.0, f32::MIN_POSITIVE, -0.0, 1e-45],
            vec![1e-40, -3e-39, 2e-45], // all subnormal: the scale itself is subnormal
            vec![
                1e-30, -7e-38, 5.0, -2.0, 0.0049, 0.0098, 0.0099, -0.0099, 0.01,
            ], // around half a step of 0.0275
        ];
        for (length, low, high) in [
            (1, -1.0, 1.0),
            (15, 0.5, 3.0),
            (16, -4.0, -0.1),
            (3840, -7.0, 9.0),
        ] {
            cases.push((0..length).map(|_| low + (high - low) * next()).collect());
        }
        for xs in &cases {
            assert_eq!(run_quantize(xs)?, reference(xs), "input {xs:?}");
        }
        assert_eq!(run_quantize(&cases[0])?.0, [153, 255, 0, 26, 221, 179]);
        Ok(())
    }

    /// The baseline's compilation against the wider ones this CPU runs (`widest_vectors!`; only x86-64 has more
    /// than one).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_vector_width_quantizes_alike() {
        let xs: Vec<f32> = (0..3843)
            .map(|i| ((i * 7919) % 2003) as f32 / 97.0 - 9.5)
            .chain([1e-40, -0.0, f32::NAN])
            .collect();
        let mut expected = vec![0u8; xs.len()];
        let expected_range = quantize_u8::baseline(&xs, &mut expected);
        for (name, available, variant) in [
            (
                "avx2",
                std::arch::is_x86_feature_detected!("avx2"),
                quantize_u8::avx2 as unsafe fn(&[f32], &mut [u8]) -> (f32, u8),
            ),
            (
                "avx512",
                std::arch::is_x86_feature_detected!("avx512f"),
                quantize_u8::avx512,
            ),
        ] {
            if !available {
                continue;
            }
            let mut ys = vec![0u8; xs.len()];
            // SAFETY: the CPU has the variant's instructions, checked above.
            let range = unsafe { variant(&xs, &mut ys) };
            assert_eq!((range, &ys), (expected_range, &expected), "{name}");
        }
    }
}
