//! Softmax over the last axis, as attention takes it. tract's own takes a row whose length is not a multiple of 4
//! (every row of the ViT's 50 tokens, and most of the decoder's growing past) through three kernel calls and scratch
//! copies; this one takes each row in one pass of plain f32 arithmetic that the compiler vectorises.
//!
//! Not tract's bits: its exponential is its own approximation, chosen per CPU, and it sums in another order. This
//! one is the same on every CPU (no fused multiply-add, a fixed summation order), within an ulp of e^x, and was taken
//! with its own golden check: the fixture's, the demo's and the ARM parity token ids are unchanged (ARCHITECTURE.md,
//! the rewrite invariant).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::tract_linalg::multithread::par_chunks_mut;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// `softmax(x)_i = e^(x_i - max x) / sum_j e^(x_j - max x)` over the last axis of an f32 tensor.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct LastAxisSoftmax;

impl Op for LastAxisSoftmax {
    fn name(&self) -> StaticName {
        "LastAxisSoftmax".into()
    }

    op_as_typed_op!();
}

impl EvalOp for LastAxisSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut output = args_1!(inputs).into_tensor();
        let row_len = output.shape().last().copied().unwrap_or(1);
        if row_len > 0 {
            let mut plain = output.try_as_plain_ram_mut()?;
            let values = plain.as_slice_mut::<f32>()?;
            let total = values.len();
            // The same split over tract's threads as tract's own softmax: rows, each one whole on one thread.
            par_chunks_mut(values, row_len, total, |_, rows| {
                rows.chunks_mut(row_len).for_each(softmax_row);
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for LastAxisSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type() && inputs[0].rank() > 0);
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Lanes of the row loops: wide enough for the compiler to keep them in vector registers.
const LANES: usize = 16;

fn softmax_row(row: &mut [f32]) {
    let mut chunks = row.chunks_exact(LANES);
    let mut highest = [f32::NEG_INFINITY; LANES];
    for chunk in &mut chunks {
        for lane in 0..LANES {
            highest[lane] = if chunk[lane] > highest[lane] {
                chunk[lane]
            } else {
                highest[lane]
            };
        }
    }
    let max = highest
        .iter()
        .chain(chunks.remainder())
        .fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a });

    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for lane in 0..LANES {
            chunk[lane] = exp_non_positive(chunk[lane] - max);
            sums[lane] += chunk[lane];
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_non_positive(*x - max);
        tail += *x;
    }
    let inverse = (sums.iter().sum::<f32>() + tail).recip();
    for x in row {
        *x *= inverse;
    }
}

/// e^x for x <= 0, within an ulp: Cody and Waite's reduction to `2^n * e^r`, |r| <= ln 2 / 2, and Cephes' `expf`
/// polynomial for e^r. Plain f32 operations and no branch, so that the row loops vectorise; below e^-87.3, where
/// `2^n` would leave the normal range, it is 0 (a softmax's largest term is e^0 = 1).
fn exp_non_positive(x: f32) -> f32 {
    const LN2_HIGH: f32 = 355.0 / 512.0; // ln 2 to 9 bits, so that n * LN2_HIGH is exact
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer (to nearest, ties even) and leaves that integer in the low bits.
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = (x - n * LN2_HIGH) - n * LN2_LOW;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    let n_bits = shifted.to_bits().wrapping_sub(SHIFT.to_bits());
    let two_to_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x < -87.3 { 0.0 } else { e_r * two_to_n }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error in units of the last place of f32 numbers of the expected value's magnitude.
    fn ulps(actual: f32, expected: f64) -> f64 {
        let ulp = f64::from(f32::EPSILON) * expected.abs().log2().floor().exp2();
        (f64::from(actual) - expected).abs() / ulp
    }

    #[test]
    fn exp_is_within_an_ulp_down_to_the_normal_range() {
        let mut worst = 0f64;
        for i in 0..=873_000 {
            let x = -(i as f32) * 1e-4;
            let expected = f64::from(x).exp();
            let actual = exp_non_positive(x);
            if x >= -87.3 {
                worst = worst.max(ulps(actual, expected));
            } else {
                assert_eq!(actual, 0.0, "e^{x}");
            }
        }
        assert!(worst <= 1.0, "worst error {worst} ulp");
        assert_eq!(exp_non_positive(0.0), 1.0);
        assert_eq!(exp_non_positive(f32::NEG_INFINITY), 0.0);
        assert!(exp_non_positive(f32::NAN).is_nan());
    }

    /// Rows of every length from 1 to 70 (whole chunks, tails, both), spread values, a masked (-inf) entry.
    fn rows() -> Vec<Vec<f32>> {
        (1..=70)
            .map(|len| {
                (0..len)
                    .map(|i| match (len * 7 + i * 13) % 29 {
                        0 if len > 1 => f32::NEG_INFINITY,
                        v => (v as f32 - 14.0) * 0.83,
                    })
                    .collect()
            })
            .collect()
    }

    /// Exact but for `x - max`, which every softmax rounds to f32 (an error of up to half an ulp of the difference,
    /// which e^x turns into a relative one of that size).
    fn softmax_f64(row: &[f32]) -> Vec<f64> {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let exps: Vec<f64> = row.iter().map(|&x| f64::from(x - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    }

    #[test]
    fn rows_are_softmax_to_within_a_few_ulp() {
        for row in rows() {
            let mut ours = row.clone();
            softmax_row(&mut ours);
            for (actual, expected) in ours.iter().zip(softmax_f64(&row)) {
                if expected == 0.0 {
                    assert_eq!(*actual, 0.0);
                } else {
                    assert!(
                        ulps(*actual, expected) <= 4.0,
                        "{row:?}: {actual} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_op_takes_the_last_axis_with_tracts_threads_or_without() -> TractResult<()> {
        use tract_onnx::tract_core::tract_linalg::multithread::{
            Executor, multithread_tract_scope,
        };

        let rows = rows()
            .into_iter()
            .filter(|row| row.len() == 50)
            .collect::<Vec<_>>();
        let mut input = Vec::new();
        for _ in 0..700 {
            input.extend_from_slice(&rows[0]);
        }
        let tensor = Tensor::from_shape(&[7, 100, 50], &input)?;
        let run = || -> TractResult<Tensor> {
            let output = LastAxisSoftmax.eval(
                &EvalContext::out_of_plan(),
                tvec![tensor.clone().into_tvalue()],
            )?;
            Ok(output[0].clone().into_tensor())
        };
        let alone = run()?;
        let mut expected = rows[0].clone();
        softmax_row(&mut expected);
        assert!(
            alone
                .try_as_plain_ram()?
                .as_slice::<f32>()?
                .chunks(50)
                .all(|row| row == expected)
        );
        assert_eq!(
            multithread_tract_scope(Executor::multithread(2), run)?,
            alone
        );
        Ok(())
    }
}
