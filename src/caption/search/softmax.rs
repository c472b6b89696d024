//! The softmax's normaliser over a row of logits, fast enough to run over GPT-2's whole vocabulary for every beam
//! at every step, and close enough to f64 that ranking by it is exact to the reference (docs/bundle-format.md).

/// The softmax's normaliser, log(sum(exp(logits))): a token's log-probability is its logit minus this, in f64
/// because ranking compares sums of log-probabilities and f32 rounding would reorder near-ties. Only the
/// exponentials are f32 (over GPT-2's 50,257 tokens for every beam, f64's cost a tenth of a caption): that moves
/// the result by about 1e-7, less than tract's logits themselves differ from onnxruntime's (~1e-6). Summed in
/// [`LANES`] partial sums so that the loop vectorises.
pub(crate) fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = max_ignoring_nan(logits);
    if max.is_infinite() {
        return f64::from(max);
    }
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut sums = [0f64; LANES];
    for chunk in chunks {
        for lane in 0..LANES {
            sums[lane] += f64::from(exp_at_most_zero(chunk[lane] - max));
        }
    }
    let sum = sums.iter().sum::<f64>()
        + tail
            .iter()
            .map(|&x| f64::from(exp_at_most_zero(x - max)))
            .sum::<f64>();
    f64::from(max) + sum.ln()
}

/// Lanes of [`log_sum_exp`]'s loops.
const LANES: usize = 8;

/// The largest value, NaNs ignored (negative infinity when all are NaN or there are none), as `f32::max` folds.
fn max_ignoring_nan(xs: &[f32]) -> f32 {
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut maxima = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for lane in 0..LANES {
            maxima[lane] = if chunk[lane] > maxima[lane] {
                chunk[lane]
            } else {
                maxima[lane]
            };
        }
    }
    maxima
        .iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// e^x for x <= 0 (NaN stays NaN): Cephes' `expf`, range reduction to x = n ln 2 + r with |r| <= ln 2 / 2 and a
/// degree-7 polynomial for e^r, within 2 ulp of `f32::exp`. `f32::exp` is a libm call the compiler cannot
/// vectorise, and 50,257 of them per beam were a tenth of a beam-5 caption.
fn exp_at_most_zero(x: f32) -> f32 {
    // Below this e^x is not a normal f32; beside the maximum's e^0 = 1 it adds nothing to the sum.
    const LOWEST: f32 = -87.0;
    // Adding 1.5 * 2^23 rounds to an integer, which lands in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let clamped = if x > LOWEST { x } else { LOWEST };
    let shifted = clamped * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = clamped - n * LN2_HIGH - n * LN2_LOW;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^n, from n's bits: n is in [-126, 0], so the exponent field n + 127 is a normal one.
    let n_bits = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let two_to_n = f32::from_bits(((n_bits + 127) << 23) as u32);
    if x > LOWEST {
        e_r * two_to_n
    } else if x.is_nan() {
        x
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponentials_are_within_two_ulp_of_libm() {
        let mut x = 0.0f32;
        while x > -100.0 {
            let (ours, libm) = (exp_at_most_zero(x), x.exp());
            let ulp = f32::from_bits(libm.to_bits() + 1) - libm;
            if x > -87.0 {
                assert!((ours - libm).abs() <= 2.0 * ulp, "e^{x}: {ours} vs {libm}");
            } else {
                assert!(ours == 0.0 && libm < 1.7e-38, "e^{x}: {ours} vs {libm}");
            }
            x -= 0.000_731;
        }
        assert_eq!(exp_at_most_zero(0.0), 1.0);
        assert_eq!(exp_at_most_zero(f32::NEG_INFINITY), 0.0);
        assert!(exp_at_most_zero(f32::NAN).is_nan());
        assert_eq!(max_ignoring_nan(&[f32::NAN, -3.0, f32::NAN]), -3.0);
        assert_eq!(max_ignoring_nan(&[f32::NAN; 9]), f32::NEG_INFINITY);
        assert!(log_sum_exp(&[1.0, f32::NAN, 2.0]).is_nan());
    }

    #[test]
    fn log_sum_exp_is_stable_and_close_to_f64() {
        let log_sum = log_sum_exp(&[1000.0, 1000.0, f32::NEG_INFINITY]);
        assert!((1000.0 - log_sum - 0.5f64.ln()).abs() < 1e-12);
        assert_eq!(f64::from(f32::NEG_INFINITY) - log_sum, f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 2]), f64::NEG_INFINITY);

        // A vocabulary's worth of logits spread like a decoder's, against the all-f64 computation.
        let logits: Vec<f32> = (0..50_257u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) % 10_000) as f32 / 10_000.0 - 0.5) * 30.0)
            .collect();
        let max = logits
            .iter()
            .map(|&x| f64::from(x))
            .fold(f64::NEG_INFINITY, f64::max);
        let exact = max
            + logits
                .iter()
                .map(|&x| (f64::from(x) - max).exp())
                .sum::<f64>()
                .ln();
        assert!(
            (log_sum_exp(&logits) - exact).abs() < 1e-6,
            "{} vs {exact}",
            log_sum_exp(&logits)
        );
    }
}
