//! The int8 product of quantized activations by a constant weight matrix, `MatMulInteger` with a constant right
//! side, on x86-64 cores with AVX-512 VNNI. tract's own kernel for these cores is a 16x16 tile over a symbolic row
//! count: at a decoder step's one row (greedy) or five (beam) it does 16 rows' work for each one it keeps, and half
//! of a caption's time was that kernel (BENCHMARKS.md, "Where a beam-5 caption's time goes"). This one does no
//! work for rows that are not there; the sums are integers, so its output is bit for bit tract's.
//!
//! `rewrite::int8_products_on_vnni` puts it in the graph where the CPU has the instructions; elsewhere, and on
//! other architectures (this module is x86-64's only), tract's kernels stay.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::tract_linalg::multithread::{Executor, current_tract_executor};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use crate::runtime::kernels::spin_pool;

/// Output columns one pass over the weights produces: four 16-lane vectors.
const GROUP_COLUMNS: usize = 64;
/// Bytes of the k axis that one VNNI instruction sums per lane.
const K_STEP: usize = 4;
/// Rows of activations one pass over a group's weights serves: 6 rows x 4 vectors is 24 accumulators, of 32
/// registers. Six, not four, so that a beam of 5 is one pass: the vocabulary projection then reads its 38 MB once
/// (1.14 -> 0.94 ms); at 40 and 50 rows the two are the same.
const ROWS_PER_PASS: usize = 6;
/// Products of fewer multiply-adds stay on one thread: a few tens of microseconds of work, where handing a share
/// over and waiting for it would be a sizeable part.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// 64 bytes, aligned as one vector load wants them.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([i8; 64]);

/// A `[k, n]` int8 weight matrix laid out for the kernel, with what the zero points' correction needs.
///
/// Layout: for each group of 64 columns, for each step of 4 along k, one 256-byte block of four lines; line `b`
/// holds columns `16b..16b+16` of the group, each as its 4 consecutive k values. Columns and k are padded with 0.
pub struct Int8Weights {
    k: usize,
    n: usize,
    lines: Vec<Line>,
    /// Sum of each column over k, padded with 0 to whole groups.
    column_sums: Vec<i32>,
    zero_point: i32,
}

impl Int8Weights {
    pub fn pack(weights: &[i8], k: usize, n: usize, zero_point: i8) -> TractResult<Int8Weights> {
        ensure!(
            k > 0 && n > 0 && weights.len() == k * n,
            "weights of {} values for [{k}, {n}]",
            weights.len()
        );
        let groups = n.div_ceil(GROUP_COLUMNS);
        let steps = k.div_ceil(K_STEP);
        let mut lines = vec![Line([0; 64]); groups * steps * K_STEP];
        for step in 0..steps {
            for group in 0..groups {
                let block = &mut lines[(group * steps + step) * K_STEP..][..K_STEP];
                for offset in 0..K_STEP {
                    let row = step * K_STEP + offset;
                    if row >= k {
                        break;
                    }
                    let first = group * GROUP_COLUMNS;
                    let last = (first + GROUP_COLUMNS).min(n);
                    for (column, &w) in weights[row * n + first..row * n + last].iter().enumerate()
                    {
                        block[column / 16].0[column % 16 * K_STEP + offset] = w;
                    }
                }
            }
        }
        let mut column_sums = vec![0i32; groups * GROUP_COLUMNS];
        for row in weights.chunks_exact(n) {
            for (sum, &w) in column_sums.iter_mut().zip(row) {
                *sum += i32::from(w);
            }
        }
        Ok(Int8Weights {
            k,
            n,
            lines,
            column_sums,
            zero_point: i32::from(zero_point),
        })
    }

    fn groups(&self) -> usize {
        self.n.div_ceil(GROUP_COLUMNS)
    }

    fn steps(&self) -> usize {
        self.k.div_ceil(K_STEP)
    }
}

/// `out[r, c] = sum over i of (a[r, i] - a_zero_point) * (w[i, c] - w_zero_point)`, in i32, for activations `a` of
/// shape `[.., k]` (u8) and the constant weights. Inputs: `a` and its zero point (a u8 scalar).
///
/// Scaled ([`Int8MatMul::scaled`]), it also takes the product's scale (an f32 of one element) and returns
/// `(out as f32) * scale`: the `Cast` and `Mul` that follow every `MatMulInteger` of a dynamically quantized graph,
/// the same two roundings in the same order, done while the sums are still in registers.
#[derive(Clone)]
pub struct Int8MatMul {
    weights: Arc<Int8Weights>,
    scaled: bool,
}

impl Int8MatMul {
    /// `None` where the CPU lacks the instructions the kernel needs.
    pub fn new(weights: Int8Weights) -> Option<Int8MatMul> {
        kernel_available().then(|| Int8MatMul {
            weights: Arc::new(weights),
            scaled: false,
        })
    }

    /// The same product, followed by the cast to f32 and the multiplication by a third input.
    pub fn scaled(self) -> Int8MatMul {
        Int8MatMul {
            scaled: true,
            ..self
        }
    }
}

impl std::fmt::Debug for Int8MatMul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Int8MatMul(k={}, n={})", self.weights.k, self.weights.n)
    }
}

impl PartialEq for Int8MatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights) && self.scaled == other.scaled
    }
}

impl Eq for Int8MatMul {}

impl Op for Int8MatMul {
    fn name(&self) -> StaticName {
        "Int8MatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "k={} n={} scaled={}",
            self.weights.k, self.weights.n, self.scaled
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Int8MatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let weights = &*self.weights;
        let activations = inputs[0].try_as_plain_ram()?;
        let activations = activations.as_slice::<u8>()?;
        let zero_point = inputs[1].try_as_plain_ram()?.as_slice::<u8>()?[0];
        let shape = inputs[0].shape();
        ensure!(
            shape.last() == Some(&weights.k),
            "activations of shape {shape:?} for k={}",
            weights.k
        );
        let rows = activations.len() / weights.k.max(1);
        let mut output_shape: TVec<usize> = shape.into();
        *output_shape.last_mut().context("rank 0 activations")? = weights.n;
        let activations = Activations::new(activations, rows, weights.k, zero_point);
        let output = if self.scaled {
            let scale = inputs
                .get(2)
                .context("a scaled product without its scale")?;
            let scale = scale.try_as_plain_ram()?;
            let scale = scale.as_slice::<f32>()?;
            ensure!(scale.len() == 1, "a scale of {} values", scale.len());
            let mut output = Tensor::zero::<f32>(&output_shape)?;
            let mut values = output.try_as_plain_ram_mut()?;
            let values = values.as_slice_mut::<f32>()?;
            multiply(
                weights,
                &activations,
                Some(scale[0]),
                values.as_mut_ptr().cast(),
            );
            output
        } else {
            let mut output = Tensor::zero::<i32>(&output_shape)?;
            let mut values = output.try_as_plain_ram_mut()?;
            let values = values.as_slice_mut::<i32>()?;
            multiply(weights, &activations, None, values.as_mut_ptr().cast());
            output
        };
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Int8MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        *shape.last_mut().context("rank 0 activations")? = self.weights.n.to_dim();
        Ok(tvec!(if self.scaled {
            f32::fact(shape)
        } else {
            i32::fact(shape)
        }))
    }

    as_op!();
}

/// The activations' rows, each padded with 0 to a whole number of k steps, and what the correction needs of them.
struct Activations {
    padded: Vec<u8>,
    stride: usize,
    rows: usize,
    zero_point: i32,
    /// Per row: `w_zero_point * (k * a_zero_point - sum of the row)`, the part of the correction that is the same
    /// across the row; the rest, `-a_zero_point * column sum`, is per column.
    row_terms: Vec<i32>,
}

impl Activations {
    fn new(values: &[u8], rows: usize, k: usize, zero_point: u8) -> Activations {
        let stride = k.div_ceil(K_STEP) * K_STEP;
        let mut padded = vec![0u8; rows * stride];
        for (row, values) in padded
            .chunks_exact_mut(stride)
            .zip(values.chunks_exact(k.max(1)))
        {
            row[..k].copy_from_slice(values);
        }
        let zero_point = i32::from(zero_point);
        let row_terms = values
            .chunks_exact(k.max(1))
            .map(|row| {
                let sum: i32 = row.iter().map(|&a| i32::from(a)).sum();
                (k as i32).wrapping_mul(zero_point).wrapping_sub(sum)
            })
            .collect();
        Activations {
            padded,
            stride,
            rows,
            zero_point,
            row_terms,
        }
    }
}

/// Writes the product to `output`, `rows * n` values (i32, or f32 with a scale). Splits the column groups among
/// as many threads as tract is given (`capdec bench --threads`), on our own spinning helpers, when the product is
/// big enough.
fn multiply(
    weights: &Int8Weights,
    activations: &Activations,
    scale: Option<f32>,
    output: *mut u32,
) {
    let output = OutputColumns(output);
    let run = |first: usize, last: usize| {
        // SAFETY: `kernel_available` was true when the op was made; `output` holds `rows * n` values; each call
        // writes only its own groups' columns.
        unsafe { kernel::multiply_groups(weights, activations, scale, first..last, output) }
    };
    let threads = match current_tract_executor() {
        Executor::MultiThread(pool)
            if activations.rows * weights.k * weights.n >= PARALLEL_MIN_MACS =>
        {
            pool.current_num_threads()
        }
        _ => 1,
    };
    spin_pool::split(threads, weights.groups(), &run);
}

/// Where the output's rows of 4-byte values (i32 or f32) start; each thread writes its own columns of them.
#[derive(Clone, Copy)]
struct OutputColumns(*mut u32);
// SAFETY: threads given the same `OutputColumns` write disjoint columns (`multiply`).
unsafe impl Send for OutputColumns {}
unsafe impl Sync for OutputColumns {}

/// Whether this CPU has the instructions of the kernel: AVX-512 F, BW and VNNI.
pub fn kernel_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

mod kernel {
    use super::*;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Computes the output's columns of `groups`, for every row: i32, or f32 multiplied by `scale`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; `output` points to `rows * n` values.
    pub(super) unsafe fn multiply_groups(
        weights: &Int8Weights,
        activations: &Activations,
        scale: Option<f32>,
        groups: Range<usize>,
        output: OutputColumns,
    ) {
        for group in groups {
            let mut row = 0;
            while row < activations.rows {
                let rows = (activations.rows - row).min(ROWS_PER_PASS);
                // SAFETY: as the caller promised; the row range is within the activations.
                unsafe {
                    match rows {
                        1 => tile::<1>(weights, activations, scale, group, row, output),
                        2 => tile::<2>(weights, activations, scale, group, row, output),
                        3 => tile::<3>(weights, activations, scale, group, row, output),
                        4 => tile::<4>(weights, activations, scale, group, row, output),
                        5 => tile::<5>(weights, activations, scale, group, row, output),
                        _ => tile::<6>(weights, activations, scale, group, row, output),
                    }
                }
                row += rows;
            }
        }
    }

    /// `R` rows from `first_row` by one group of 64 columns: one pass over the group's weights, four VNNI
    /// instructions per row and k step, then the zero points' correction, the scale if any, and the store of the
    /// columns that exist.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const R: usize>(
        weights: &Int8Weights,
        activations: &Activations,
        scale: Option<f32>,
        group: usize,
        first_row: usize,
        output: OutputColumns,
    ) {
        let steps = weights.steps();
        let lines = weights.lines[group * steps * K_STEP..][..steps * K_STEP].as_ptr();
        let rows: [*const u8; R] = std::array::from_fn(|r| {
            activations.padded[(first_row + r) * activations.stride..].as_ptr()
        });
        let mut sums = [[_mm512_setzero_si512(); 4]; R];
        for step in 0..steps {
            // SAFETY: `step * 4 + 3` is within the group's lines, and `step * 4 + 4` bytes within each padded row.
            unsafe {
                let block = lines.add(step * K_STEP) as *const __m512i;
                let w = [
                    _mm512_load_si512(block),
                    _mm512_load_si512(block.add(1)),
                    _mm512_load_si512(block.add(2)),
                    _mm512_load_si512(block.add(3)),
                ];
                for r in 0..R {
                    let a = _mm512_set1_epi32(
                        (rows[r].add(step * K_STEP) as *const i32).read_unaligned(),
                    );
                    for b in 0..4 {
                        sums[r][b] = _mm512_dpbusd_epi32(sums[r][b], a, w[b]);
                    }
                }
            }
        }
        let a_zero_point = _mm512_set1_epi32(activations.zero_point);
        for (r, row_sums) in sums.iter().enumerate() {
            let row = first_row + r;
            let row_term =
                _mm512_set1_epi32(weights.zero_point.wrapping_mul(activations.row_terms[row]));
            for (b, &sum) in row_sums.iter().enumerate() {
                let column = group * GROUP_COLUMNS + b * 16;
                if column >= weights.n {
                    break;
                }
                // SAFETY: `column + 16` is within the padded column sums, and the store writes only columns < n of
                // this row.
                unsafe {
                    let column_sums =
                        _mm512_loadu_si512(weights.column_sums.as_ptr().add(column) as *const _);
                    let corrected = _mm512_add_epi32(
                        _mm512_sub_epi32(sum, _mm512_mullo_epi32(a_zero_point, column_sums)),
                        row_term,
                    );
                    let kept = (weights.n - column).min(16);
                    let mask: __mmask16 = if kept == 16 { !0 } else { (1u16 << kept) - 1 };
                    let to = output.0.add(row * weights.n + column);
                    match scale {
                        // Cast, then multiply: the rounding of tract's `Cast` and `Mul`, one after the other.
                        Some(scale) => _mm512_mask_storeu_ps(
                            to.cast(),
                            mask,
                            _mm512_mul_ps(_mm512_cvtepi32_ps(corrected), _mm512_set1_ps(scale)),
                        ),
                        None => _mm512_mask_storeu_epi32(to.cast(), mask, corrected),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::tract_linalg::multithread::{Executor, multithread_tract_scope};

    /// Pseudo-random values covering the whole range of each type.
    fn values<T>(count: usize, seed: u32, from_byte: fn(u8) -> T) -> Vec<T> {
        let mut state = seed | 1;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                from_byte((state >> 24) as u8)
            })
            .collect()
    }

    /// The product as ONNX's MatMulInteger defines it, in i64.
    fn reference(a: &[u8], w: &[i8], k: usize, n: usize, a0: u8, w0: i8) -> Vec<i32> {
        let rows = a.len() / k;
        let mut out = vec![0i32; rows * n];
        for r in 0..rows {
            for c in 0..n {
                let sum: i64 = (0..k)
                    .map(|i| {
                        (i64::from(a[r * k + i]) - i64::from(a0))
                            * (i64::from(w[i * n + c]) - i64::from(w0))
                    })
                    .sum();
                out[r * n + c] = i32::try_from(sum).unwrap();
            }
        }
        out
    }

    fn product(op: &Int8MatMul, a: &[u8], shape: &[usize], a0: u8) -> Vec<i32> {
        let inputs = tvec![
            Tensor::from_shape(shape, a).unwrap().into_tvalue(),
            tensor0(a0).into_tvalue()
        ];
        let output = op.eval(&EvalContext::out_of_plan(), inputs).unwrap();
        let mut expected_shape = shape.to_vec();
        *expected_shape.last_mut().unwrap() = op.weights.n;
        assert_eq!(output[0].shape(), expected_shape.as_slice());
        output[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<i32>()
            .unwrap()
            .to_vec()
    }

    /// Whether /proc/cpuinfo lists AVX-512 VNNI (with the F and BW it needs), read apart from the detection the
    /// op relies on, so that a broken detection cannot turn these tests into skips where the instructions are.
    fn cpuinfo_has_vnni() -> Option<bool> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
        let flags: Vec<&str> = flags.split_whitespace().collect();
        Some(
            ["avx512f", "avx512bw", "avx512_vnni"]
                .iter()
                .all(|f| flags.contains(f)),
        )
    }

    /// The op, or `None` where the CPU lacks AVX-512 VNNI: then the test says it was skipped.
    fn op_unless_skipped(test: &str, weights: Int8Weights) -> Option<Int8MatMul> {
        let op = Int8MatMul::new(weights);
        let cpu_has_vnni = cpuinfo_has_vnni().unwrap_or_else(kernel_available);
        assert_eq!(
            op.is_some(),
            cpu_has_vnni,
            "{test}: the op must be made exactly where the CPU has AVX-512 VNNI"
        );
        if op.is_none() {
            eprintln!(
                "{test}: SKIPPED: this CPU lacks AVX-512 VNNI, tract's kernels run instead of this one"
            );
        }
        op
    }

    #[test]
    fn products_equal_onnx_matmul_integer_for_every_shape_and_zero_point() {
        let Some(probe) = op_unless_skipped("products", Int8Weights::pack(&[1], 1, 1, 0).unwrap())
        else {
            return;
        };
        assert_eq!(product(&probe, &[200], &[1, 1], 3), [197]);
        // k and n off the kernel's steps (4 and 16/64), 1 to 13 rows (passes of 1 to 6 rows), both zero points
        // at their extremes.
        for (k, n) in [(1, 1), (3, 17), (4, 64), (13, 65), (64, 130), (770, 48)] {
            let w = values(k * n, (k * 31 + n) as u32, |b| b as i8);
            for w0 in [0i8, -128, 5] {
                let op = Int8MatMul::new(Int8Weights::pack(&w, k, n, w0).unwrap()).unwrap();
                for rows in [1, 2, 3, 4, 5, 6, 9, 13] {
                    let a = values(rows * k, (rows * 7 + k) as u32, |b| b);
                    for a0 in [0u8, 255, 131] {
                        assert_eq!(
                            product(&op, &a, &[rows, k], a0),
                            reference(&a, &w, k, n, a0, w0),
                            "k={k} n={n} rows={rows} a0={a0} w0={w0}"
                        );
                    }
                }
            }
        }
        // Leading axes are rows too.
        let (k, n) = (8, 20);
        let w = values(k * n, 99, |b| b as i8);
        let op = Int8MatMul::new(Int8Weights::pack(&w, k, n, 0).unwrap()).unwrap();
        let a = values(2 * 3 * k, 7, |b| b);
        assert_eq!(
            product(&op, &a, &[2, 3, k], 9),
            reference(&a, &w, k, n, 9, 0)
        );
    }

    #[test]
    fn a_scaled_product_is_the_cast_then_the_multiplication() {
        let (k, n, rows) = (29, 70, 7);
        let w = values(k * n, 3, |b| b as i8);
        let Some(op) = op_unless_skipped("scaled", Int8Weights::pack(&w, k, n, 4).unwrap()) else {
            return;
        };
        let op = op.scaled();
        let a = values(rows * k, 8, |b| b);
        // A scale whose products round (not a power of two).
        let scale = 0.013_7f32;
        let inputs = tvec![
            Tensor::from_shape(&[rows, k], &a).unwrap().into_tvalue(),
            tensor0(21u8).into_tvalue(),
            tensor2(&[[scale]]).into_tvalue()
        ];
        let output = op.eval(&EvalContext::out_of_plan(), inputs).unwrap();
        let output = output[0].try_as_plain_ram().unwrap();
        let expected: Vec<f32> = reference(&a, &w, k, n, 21, 4)
            .into_iter()
            .map(|sum| sum as f32 * scale)
            .collect();
        let bits = |xs: &[f32]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(output.as_slice::<f32>().unwrap()), bits(&expected));
    }

    #[test]
    fn products_over_the_threshold_are_shared_among_threads_with_the_same_result() {
        let (k, n) = (64, (PARALLEL_MIN_MACS / 64 / 3) + 100);
        let w = values(k * n, 5, |b| b as i8);
        let Some(op) = op_unless_skipped("shared", Int8Weights::pack(&w, k, n, -2).unwrap()) else {
            return;
        };
        let a = values(3 * k, 11, |b| b);
        let expected = reference(&a, &w, k, n, 17, -2);
        assert_eq!(product(&op, &a, &[3, k], 17), expected);
        let shared =
            multithread_tract_scope(Executor::multithread(2), || product(&op, &a, &[3, k], 17));
        assert_eq!(shared, expected);
    }

    #[test]
    fn packing_refuses_weights_of_the_wrong_length() {
        let error = Int8Weights::pack(&[1, 2, 3], 2, 2, 0).err().unwrap();
        assert!(error.to_string().contains("[2, 2]"), "{error}");
        let error = Int8Weights::pack(&[], 3, 0, 0).err().unwrap();
        assert!(error.to_string().contains("[3, 0]"), "{error}");
    }
}
