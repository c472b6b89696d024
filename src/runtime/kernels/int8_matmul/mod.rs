//! The int8 product of quantized activations by a constant weight matrix, `MatMulInteger` with a constant right
//! side. tract's kernels for it are tiles over a symbolic row count (16x16 on AVX-512 VNNI, 8x8 on ARM): at a
//! decoder step's one row (greedy) or five (beam) they do 8 to 16 rows' work for each one kept, and half of a
//! caption's time was that kernel (BENCHMARKS.md, "Where a beam-5 caption's time goes"). These kernels do no work
//! for rows that are not there; the sums are integers, so the output is bit for bit tract's on every kernel.
//!
//! One kernel per instruction set ([`Kernel`], chosen at run time from the CPU's features): AVX-512 VNNI, AVX-VNNI
//! and AVX2 on x86-64; SDOT (dot product: Pi 5, Jetson Orin) and widening multiplies (every aarch64 core: Pi 3 and
//! 4) on aarch64; the same widening multiplies on armv7 with NEON (32-bit Pi OS). Each reads the weights packed
//! once, at load, for its own vector width (`Int8Weights`), and writes the plain integer sums of up to six rows by
//! one group of columns into the output; the zero points' correction and the scale are then done in place for a
//! block of groups at once (`finish`). `rewrite::int8_products_on_our_kernel` puts the op in the graph where a
//! kernel runs; elsewhere (armv7 without NEON, other architectures) tract's kernels stay.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "arm")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use crate::runtime::kernels::spin_pool;

/// Bytes of the k axis that one step of a kernel sums per column: VNNI's and SDOT's four (`Kernel::k_run` may
/// lay out longer runs).
const K_STEP: usize = 4;
/// The k axis of weights and activations is padded with zeros to a multiple of this: SDOT's kernel reads the
/// activations 16 bytes (four steps) at a time.
const K_ALIGN: usize = 16;
/// Rows of activations one pass over a group's weights serves at most (a kernel may take fewer: its tiles). At
/// least five, so that a beam of 5 is one pass: the vocabulary projection then reads its 38 MB once (BENCHMARKS.md).
const MAX_ROWS_PER_PASS: usize = 6;
/// Groups whose sums are corrected together, in place: columns enough for long vectorised loops, few enough that
/// they are still in cache (1,024 to 4,096 columns).
const BLOCK_GROUPS: usize = 64;
/// The environment variable that picks a kernel by name (or `tract`, for tract's own), for benchmarks and tests.
pub const KERNEL_VARIABLE: &str = "CAPDEC_INT8_KERNEL";

/// An instruction set our products run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 F, BW and VNNI (`vpdpbusd` on 512 bits): Ice Lake and later Xeons, Zen 4.
    Avx512Vnni,
    /// AVX-VNNI (`vpdpbusd` on 256 bits, VEX): Alder Lake and later desktops and laptops.
    AvxVnni,
    /// AVX2 (`vpmaddwd` on the weights widened to 16 bits, exact where `vpmaddubsw` saturates): most x86-64 since
    /// 2013.
    Avx2,
    /// aarch64 with the dot product (`sdot`): Cortex-A76 (Pi 5), A78 (Jetson Orin), A55.
    Sdot,
    /// aarch64 without it (`smull` + `sadalp`): Cortex-A53 (Pi 3, Zero 2 W), A72 (Pi 4), A57 (Jetson Nano); and
    /// armv7 with NEON (`vmull.s8` + `vpadal.s16`): 32-bit Pi OS on any Pi from the 2 on.
    Neon,
}

/// Computes the plain sums of `R` rows by one group of columns: `fn(weights, activations, group, first_row, sums)`.
type Tile = unsafe fn(&Int8Weights, &Activations, usize, usize, Sums);

impl Kernel {
    /// In order of preference on their architecture.
    pub const ALL: [Kernel; 5] = [
        Kernel::Avx512Vnni,
        Kernel::AvxVnni,
        Kernel::Avx2,
        Kernel::Sdot,
        Kernel::Neon,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::AvxVnni => "avx-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Sdot => "sdot",
            Kernel::Neon => "neon",
        }
    }

    /// Whether this CPU has the kernel's instructions.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return x86::available(self);
        #[cfg(target_arch = "aarch64")]
        return aarch64::available(self);
        #[cfg(target_arch = "arm")]
        return arm::available(self);
        #[allow(unreachable_code)]
        false
    }

    /// The kernel products run on: the one named by `CAPDEC_INT8_KERNEL` (`None` for `tract`), else the first
    /// this CPU has, if any.
    pub fn chosen() -> TractResult<Option<Kernel>> {
        Kernel::named(std::env::var_os(KERNEL_VARIABLE).as_deref())
    }

    /// The kernel `CAPDEC_INT8_KERNEL` names, if set.
    fn named(name: Option<&std::ffi::OsStr>) -> TractResult<Option<Kernel>> {
        let Some(name) = name else {
            return Ok(Kernel::ALL.into_iter().find(|k| k.available()));
        };
        let name = name.to_string_lossy();
        if name == "tract" {
            return Ok(None);
        }
        let names = || {
            let mut names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
            names.push("tract");
            names.join(", ")
        };
        let kernel = Kernel::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .with_context(|| format!("{KERNEL_VARIABLE}={name}: no such kernel ({})", names()))?;
        ensure!(
            kernel.available(),
            "{KERNEL_VARIABLE}={name}: this CPU lacks the kernel's instructions"
        );
        Ok(Some(kernel))
    }

    /// Output columns one pass over the weights produces, and the width the weights are packed for.
    fn group_columns(self) -> usize {
        match self {
            Kernel::Avx512Vnni => 64,
            Kernel::AvxVnni | Kernel::Sdot | Kernel::Neon => 16,
            Kernel::Avx2 => 8,
        }
    }

    /// Consecutive k values of one column that the packing keeps together: a step's 4 for the kernels that
    /// broadcast a row's 4 bytes (VNNI, SDOT, AVX2), a whole 16-byte chunk for `Neon`, which multiplies a row's
    /// chunk by a column's (no broadcast) and adds the lanes up at the end.
    fn k_run(self) -> usize {
        match self {
            Kernel::Neon => K_ALIGN,
            Kernel::Avx512Vnni | Kernel::AvxVnni | Kernel::Avx2 | Kernel::Sdot => K_STEP,
        }
    }

    /// Whether the kernel multiplies signed bytes by signed bytes, and so takes the activations shifted by -128.
    fn signed_activations(self) -> bool {
        matches!(self, Kernel::Sdot | Kernel::Neon)
    }

    /// Whether the kernel multiplies 16-bit values, and so takes the activations widened to 16 bits once rather
    /// than at every step of every group.
    fn wide_activations(self) -> bool {
        self == Kernel::Avx2
    }

    /// The kernel's tiles, for 1, 2, ... rows.
    fn tiles(self) -> &'static [Tile] {
        #[cfg(target_arch = "x86_64")]
        return x86::tiles(self);
        #[cfg(target_arch = "aarch64")]
        return aarch64::tiles(self);
        #[cfg(target_arch = "arm")]
        return arm::tiles(self);
        #[allow(unreachable_code)]
        &[]
    }
}

/// Whole 64-byte lines, so that a group's blocks start aligned for AVX-512's aligned loads.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A `[k, n]` int8 weight matrix laid out for one kernel, with what the zero points' correction needs.
///
/// Layout: for each group of `group_columns` columns, for each run of `Kernel::k_run` (4 or 16) along k, one block
/// of `run * group_columns` bytes holding each column's `run` consecutive k values in turn. Columns and k are
/// padded with 0.
// Other architectures have no tiles: the op is never created there, and what only tiles read is unused.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
pub struct Int8Weights {
    kernel: Kernel,
    k: usize,
    n: usize,
    group_columns: usize,
    /// Steps of 4 along the padded k axis.
    steps: usize,
    lines: Vec<Line>,
    /// Sum of each column over k, padded with 0 to whole groups.
    column_sums: Vec<i32>,
    zero_point: i32,
}

impl Int8Weights {
    pub fn pack(
        kernel: Kernel,
        weights: &[i8],
        k: usize,
        n: usize,
        zero_point: i8,
    ) -> TractResult<Int8Weights> {
        ensure!(
            k > 0 && n > 0 && weights.len() == k * n,
            "weights of {} values for [{k}, {n}]",
            weights.len()
        );
        let group_columns = kernel.group_columns();
        let groups = n.div_ceil(group_columns);
        let steps = k.div_ceil(K_ALIGN) * K_ALIGN / K_STEP;
        let group_bytes = steps * K_STEP * group_columns;
        let mut lines = vec![Line([0; 64]); (groups * group_bytes).div_ceil(64)];
        // SAFETY: `Line` is 64 plain bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), lines.len() * 64)
        };
        let run = kernel.k_run();
        for (row, values) in weights.chunks_exact(n).enumerate() {
            let in_group = row / run * run * group_columns + row % run;
            for (group, values) in values.chunks(group_columns).enumerate() {
                let block = &mut bytes[group * group_bytes + in_group..];
                for (to, &w) in block.iter_mut().step_by(run).zip(values) {
                    *to = w as u8;
                }
            }
        }
        let mut column_sums = vec![0i32; groups * group_columns];
        for row in weights.chunks_exact(n) {
            for (sum, &w) in column_sums.iter_mut().zip(row) {
                *sum += i32::from(w);
            }
        }
        Ok(Int8Weights {
            kernel,
            k,
            n,
            group_columns,
            steps,
            lines,
            column_sums,
            zero_point: i32::from(zero_point),
        })
    }

    fn groups(&self) -> usize {
        self.n.div_ceil(self.group_columns)
    }

    /// The first byte of a group's blocks.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
        allow(dead_code)
    )]
    fn group(&self, group: usize) -> *const i8 {
        let group_bytes = self.steps * K_STEP * self.group_columns;
        // SAFETY (of the `add`): groups * group_bytes bytes were allocated.
        unsafe { self.lines.as_ptr().cast::<i8>().add(group * group_bytes) }
    }
}

/// `out[r, c] = sum over i of (a[r, i] - a_zero_point) * (w[i, c] - w_zero_point)`, in i32, for activations `a` of
/// shape `[.., k]` (u8) and the constant weights. Inputs: `a` and its zero point (a u8 scalar).
///
/// Scaled ([`Int8MatMul::scaled`]), it also takes the product's scale (an f32 of one element) and returns
/// `(out as f32) * scale`: the `Cast` and `Mul` that follow every `MatMulInteger` of a dynamically quantized graph,
/// the same two roundings in the same order, done while the sums are still at hand.
#[derive(Clone)]
pub struct Int8MatMul {
    weights: Arc<Int8Weights>,
    scaled: bool,
}

impl Int8MatMul {
    /// `None` where the CPU lacks the instructions of the kernel the weights were packed for.
    pub fn new(weights: Int8Weights) -> Option<Int8MatMul> {
        weights.kernel.available().then(|| Int8MatMul {
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
        write!(
            f,
            "Int8MatMul(k={}, n={}, {})",
            self.weights.k,
            self.weights.n,
            self.weights.kernel.name()
        )
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
            "k={} n={} scaled={} kernel={}",
            self.weights.k,
            self.weights.n,
            self.scaled,
            self.weights.kernel.name()
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
        let rows = activations.len() / weights.k;
        let mut output_shape: TVec<usize> = shape.into();
        *output_shape.last_mut().context("rank 0 activations")? = weights.n;
        let activations =
            Activations::new(weights.kernel, activations, rows, weights.k, zero_point);
        let output = if self.scaled {
            let scale = inputs
                .get(2)
                .context("a scaled product without its scale")?;
            let scale = scale.try_as_plain_ram()?;
            let scale = scale.as_slice::<f32>()?;
            ensure!(scale.len() == 1, "a scale of {} values", scale.len());
            // SAFETY: `multiply` writes every value.
            let mut output = unsafe { Tensor::uninitialized::<f32>(&output_shape)? };
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
            // SAFETY: `multiply` writes every value.
            let mut output = unsafe { Tensor::uninitialized::<i32>(&output_shape)? };
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

/// 16 bytes, aligned, so that the kernels may read 4 or 16 bytes of a row as one aligned value.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Chunk([u8; K_ALIGN]);

/// The activations' rows as the kernel multiplies them, each padded with 0 to a multiple of 16 values, and what the
/// correction needs of them. For the signed kernels every value is shifted by -128 (a u8 `a` becomes the i8
/// `a - 128`) and so is the zero point: `a - a_zero_point` is the same. For the 16-bit kernel each value is a u16.
// Other architectures have no tiles: the op is never created there, and what only tiles read is unused.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
struct Activations {
    chunks: Vec<Chunk>,
    /// Bytes from one row to the next: k padded, times 2 for the 16-bit kernel.
    stride: usize,
    rows: usize,
    zero_point: i32,
    /// Per row: `k * a_zero_point - sum of the row`; times the weights' zero point, it is the part of the
    /// correction that is the same across the row. The rest, `-a_zero_point * column sum`, is per column.
    row_terms: Vec<i32>,
}

impl Activations {
    fn new(kernel: Kernel, values: &[u8], rows: usize, k: usize, zero_point: u8) -> Activations {
        let padded_k = k.div_ceil(K_ALIGN) * K_ALIGN;
        let wide = kernel.wide_activations();
        let stride = if wide { 2 * padded_k } else { padded_k };
        let mut chunks = vec![Chunk([0; K_ALIGN]); rows * stride / K_ALIGN];
        let shift = if kernel.signed_activations() { 128 } else { 0 };
        // SAFETY: `Chunk` is 16 plain bytes.
        let padded = unsafe {
            std::slice::from_raw_parts_mut(chunks.as_mut_ptr().cast::<u8>(), chunks.len() * K_ALIGN)
        };
        for (row, values) in padded.chunks_exact_mut(stride).zip(values.chunks_exact(k)) {
            if wide {
                for (to, &a) in row.chunks_exact_mut(2).zip(values) {
                    to.copy_from_slice(&u16::from(a).to_ne_bytes());
                }
            } else {
                for (to, &a) in row.iter_mut().zip(values) {
                    *to = a.wrapping_sub(shift);
                }
            }
        }
        let zero_point = i32::from(zero_point) - i32::from(shift);
        let row_terms = values
            .chunks_exact(k)
            .map(|row| {
                let sum: i32 = row.iter().map(|&a| i32::from(a) - i32::from(shift)).sum();
                (k as i32).wrapping_mul(zero_point).wrapping_sub(sum)
            })
            .collect();
        Activations {
            chunks,
            stride,
            rows,
            zero_point,
            row_terms,
        }
    }

    /// The first byte of a row.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
        allow(dead_code)
    )]
    fn row(&self, row: usize) -> *const u8 {
        // SAFETY (of the `add`): `rows * stride` bytes were allocated.
        unsafe { self.chunks.as_ptr().cast::<u8>().add(row * self.stride) }
    }
}

/// Products done on our kernels since the process started, for `capdec bench` (the instruction minimum of
/// scripts/arm-bench is reckoned from them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Multiply-adds: rows x k x n, summed.
    pub multiply_adds: u64,
    /// Weights of the products, k x n, summed: what one pass over each product's weights reads.
    pub weights: u64,
}

static MULTIPLY_ADDS: AtomicU64 = AtomicU64::new(0);
static WEIGHTS: AtomicU64 = AtomicU64::new(0);

pub fn work_done() -> Work {
    Work {
        multiply_adds: MULTIPLY_ADDS.load(Ordering::Relaxed),
        weights: WEIGHTS.load(Ordering::Relaxed),
    }
}

impl std::ops::Sub for Work {
    type Output = Work;

    fn sub(self, earlier: Work) -> Work {
        Work {
            multiply_adds: self.multiply_adds - earlier.multiply_adds,
            weights: self.weights - earlier.weights,
        }
    }
}

/// Writes the product to `output`, all of its `rows * n` values (i32, or f32 with a scale). Splits the column groups among
/// as many threads as tract is given (`capdec bench --threads`), on our own spinning helpers, when the product is
/// big enough.
fn multiply(
    weights: &Int8Weights,
    activations: &Activations,
    scale: Option<f32>,
    output: *mut u32,
) {
    let product_weights = (weights.k * weights.n) as u64;
    MULTIPLY_ADDS.fetch_add(activations.rows as u64 * product_weights, Ordering::Relaxed);
    WEIGHTS.fetch_add(product_weights, Ordering::Relaxed);
    let output = OutputColumns(output);
    let tiles = weights.kernel.tiles();
    let group_columns = weights.group_columns;
    let run = |first: usize, last: usize| {
        // A last group that the columns do not fill goes through this buffer of whole groups.
        let mut partial = [0i32; MAX_ROWS_PER_PASS * 64];
        for block in (first..last).step_by(BLOCK_GROUPS) {
            let groups = block..(block + BLOCK_GROUPS).min(last);
            let columns = groups.start * group_columns..(groups.end * group_columns).min(weights.n);
            for group in groups {
                let mut row = 0;
                while row < activations.rows {
                    let rows = (activations.rows - row).min(tiles.len());
                    let column = group * group_columns;
                    let whole = column + group_columns <= weights.n;
                    let sums = if whole {
                        // SAFETY: `output` holds `rows * n` values; this row and group are within them.
                        let at = unsafe { output.0.add(row * weights.n + column) };
                        Sums {
                            at: at.cast(),
                            stride: weights.n,
                        }
                    } else {
                        Sums {
                            at: partial.as_mut_ptr(),
                            stride: group_columns,
                        }
                    };
                    // SAFETY: the op exists only where the kernel's instructions do (`Int8MatMul::new`); the
                    // weights were packed for it; rows `row..row + rows` exist; `sums` has as many rows of the
                    // group's columns (the output's, or the buffer's), which no other thread writes (`split`).
                    unsafe { tiles[rows - 1](weights, activations, group, row, sums) };
                    if !whole {
                        let kept = weights.n - column;
                        for r in 0..rows {
                            // SAFETY: columns `column..n` of the row are in the output.
                            let to = unsafe { output.0.add((row + r) * weights.n + column) };
                            for (c, &sum) in partial[r * group_columns..][..kept].iter().enumerate()
                            {
                                // SAFETY: as above.
                                unsafe { to.add(c).write(sum as u32) };
                            }
                        }
                    }
                    row += rows;
                }
            }
            finish(weights, activations, scale, columns, output);
        }
    };
    let threads = spin_pool::threads_for(activations.rows * weights.k * weights.n);
    spin_pool::split(threads, weights.groups(), &run);
}

/// Where a tile writes its plain sums: row `r`, column `c` of the group at `at + r * stride + c`.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
#[derive(Clone, Copy)]
struct Sums {
    at: *mut i32,
    stride: usize,
}

/// The zero points' correction of the plain sums the tiles left in `columns` of every row of the output, and the
/// scale if any, in place: long rows, which the compiler vectorises.
fn finish(
    weights: &Int8Weights,
    activations: &Activations,
    scale: Option<f32>,
    columns: std::ops::Range<usize>,
    output: OutputColumns,
) {
    let column_terms = &weights.column_sums[columns.clone()];
    for row in 0..activations.rows {
        let row_term = weights.zero_point.wrapping_mul(activations.row_terms[row]);
        // SAFETY: `output` holds `rows * n` values and `columns.end <= n`; no other thread writes these columns
        // (`multiply`).
        let values = unsafe {
            std::slice::from_raw_parts_mut(
                output.0.add(row * weights.n + columns.start),
                columns.len(),
            )
        };
        let corrected = |sum: u32, column_sum: i32| {
            (sum as i32)
                .wrapping_sub(activations.zero_point.wrapping_mul(column_sum))
                .wrapping_add(row_term)
        };
        match scale {
            // Cast, then multiply: the rounding of tract's `Cast` and `Mul`, one after the other.
            Some(scale) => {
                for (value, &column_sum) in values.iter_mut().zip(column_terms) {
                    *value = (corrected(*value, column_sum) as f32 * scale).to_bits();
                }
            }
            None => {
                for (value, &column_sum) in values.iter_mut().zip(column_terms) {
                    *value = corrected(*value, column_sum) as u32;
                }
            }
        }
    }
}

/// Where the output's rows of 4-byte values (i32 or f32) start; each thread writes its own columns of them.
#[derive(Clone, Copy)]
struct OutputColumns(*mut u32);
// SAFETY: threads given the same `OutputColumns` write disjoint columns (`multiply`).
unsafe impl Send for OutputColumns {}
unsafe impl Sync for OutputColumns {}

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

    /// The kernels this CPU has. On x86-64 the list is checked against /proc/cpuinfo, read apart from the
    /// detection the ops rely on, so that a broken detection cannot turn kernels into skips where the
    /// instructions are; every aarch64 core has `neon`, and so do the armv7 cores the tests run on (qemu's
    /// cortex-a7 and a15).
    fn kernels_here() -> Vec<Kernel> {
        let here: Vec<Kernel> = Kernel::ALL.into_iter().filter(|k| k.available()).collect();
        #[cfg(target_arch = "x86_64")]
        if let Some(flags) = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("flags"))
                .map(str::to_owned)
        }) {
            let flags: Vec<&str> = flags.split_whitespace().collect();
            let has = |names: &[&str]| names.iter().all(|f| flags.contains(f));
            for (kernel, names) in [
                (
                    Kernel::Avx512Vnni,
                    &["avx512f", "avx512bw", "avx512_vnni"][..],
                ),
                (Kernel::AvxVnni, &["avx2", "avx_vnni"][..]),
                (Kernel::Avx2, &["avx2"][..]),
            ] {
                assert_eq!(
                    here.contains(&kernel),
                    has(names),
                    "{kernel:?} detected against /proc/cpuinfo"
                );
            }
        }
        #[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
        assert!(here.contains(&Kernel::Neon));
        for kernel in Kernel::ALL {
            if !here.contains(&kernel) {
                eprintln!(
                    "{}: SKIPPED: this CPU lacks its instructions",
                    kernel.name()
                );
            }
        }
        here
    }

    #[test]
    fn products_equal_onnx_matmul_integer_for_every_kernel_shape_and_zero_point() {
        for kernel in kernels_here() {
            let pack = |w: &[i8], k, n, w0| {
                Int8MatMul::new(Int8Weights::pack(kernel, w, k, n, w0).unwrap()).unwrap()
            };
            assert_eq!(product(&pack(&[1], 1, 1, 0), &[200], &[1, 1], 3), [197]);
            // k and n off the kernels' steps (4, 16) and groups (8 to 64), 1 to 13 rows (passes of 1 to 6 rows),
            // both zero points at their extremes.
            for (k, n) in [(1, 1), (3, 17), (4, 64), (13, 65), (64, 130), (770, 48)] {
                let w = values(k * n, (k * 31 + n) as u32, |b| b as i8);
                for w0 in [0i8, -128, 5] {
                    let op = pack(&w, k, n, w0);
                    for rows in [1, 2, 3, 4, 5, 6, 9, 13] {
                        let a = values(rows * k, (rows * 7 + k) as u32, |b| b);
                        for a0 in [0u8, 255, 131] {
                            assert_eq!(
                                product(&op, &a, &[rows, k], a0),
                                reference(&a, &w, k, n, a0, w0),
                                "{} k={k} n={n} rows={rows} a0={a0} w0={w0}",
                                kernel.name()
                            );
                        }
                    }
                }
            }
            // The extremes of every byte at once: the largest sums each kernel's lanes hold.
            let (k, n) = (48, 24);
            for (a_byte, w_byte) in [(255u8, -128i8), (0, -128), (255, 127), (0, 127)] {
                let (a, w) = (vec![a_byte; 2 * k], vec![w_byte; k * n]);
                let op = pack(&w, k, n, 0);
                assert_eq!(
                    product(&op, &a, &[2, k], 128),
                    reference(&a, &w, k, n, 128, 0),
                    "{} a={a_byte} w={w_byte}",
                    kernel.name()
                );
            }
            // Leading axes are rows too.
            let (k, n) = (8, 20);
            let w = values(k * n, 99, |b| b as i8);
            let a = values(2 * 3 * k, 7, |b| b);
            assert_eq!(
                product(&pack(&w, k, n, 0), &a, &[2, 3, k], 9),
                reference(&a, &w, k, n, 9, 0)
            );
        }
    }

    #[test]
    fn a_scaled_product_is_the_cast_then_the_multiplication() {
        let (k, n, rows) = (29, 70, 7);
        let w = values(k * n, 3, |b| b as i8);
        let a = values(rows * k, 8, |b| b);
        // A scale whose products round (not a power of two).
        let scale = 0.013_7f32;
        let expected: Vec<f32> = reference(&a, &w, k, n, 21, 4)
            .into_iter()
            .map(|sum| sum as f32 * scale)
            .collect();
        let bits = |xs: &[f32]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for kernel in kernels_here() {
            let op = Int8MatMul::new(Int8Weights::pack(kernel, &w, k, n, 4).unwrap())
                .unwrap()
                .scaled();
            let inputs = tvec![
                Tensor::from_shape(&[rows, k], &a).unwrap().into_tvalue(),
                tensor0(21u8).into_tvalue(),
                tensor2(&[[scale]]).into_tvalue()
            ];
            let output = op.eval(&EvalContext::out_of_plan(), inputs).unwrap();
            let output = output[0].try_as_plain_ram().unwrap();
            assert_eq!(
                bits(output.as_slice::<f32>().unwrap()),
                bits(&expected),
                "{}",
                kernel.name()
            );
        }
    }

    #[test]
    fn products_over_the_threshold_are_shared_among_threads_with_the_same_result() {
        let (k, n) = (64, (spin_pool::PARALLEL_MIN_MACS / 64 / 3) + 100);
        let w = values(k * n, 5, |b| b as i8);
        let a = values(3 * k, 11, |b| b);
        let expected = reference(&a, &w, k, n, 17, -2);
        for kernel in kernels_here() {
            let op = Int8MatMul::new(Int8Weights::pack(kernel, &w, k, n, -2).unwrap()).unwrap();
            assert_eq!(product(&op, &a, &[3, k], 17), expected, "{}", kernel.name());
            let shared =
                multithread_tract_scope(Executor::multithread(2), || product(&op, &a, &[3, k], 17));
            assert_eq!(shared, expected, "{}", kernel.name());
        }
    }

    #[test]
    fn a_kernel_is_chosen_by_name_or_refused_with_the_names() {
        let chosen_with = |name: &str| Kernel::named(Some(name.as_ref()));
        assert_eq!(chosen_with("tract").unwrap(), None);
        let error = chosen_with("avx1024").unwrap_err().to_string();
        assert!(error.contains("CAPDEC_INT8_KERNEL=avx1024: no such kernel (avx512-vnni, avx-vnni, avx2, sdot, neon, tract)"), "{error}");
        for kernel in Kernel::ALL {
            match chosen_with(kernel.name()) {
                Ok(chosen) => assert_eq!(chosen, Some(kernel)),
                Err(error) => {
                    assert!(!kernel.available());
                    assert!(
                        error
                            .to_string()
                            .contains("lacks the kernel's instructions"),
                        "{error}"
                    );
                }
            }
        }
        assert_eq!(
            Kernel::named(None).unwrap(),
            kernels_here().first().copied()
        );
    }

    #[test]
    fn packing_refuses_weights_of_the_wrong_length() {
        let error = Int8Weights::pack(Kernel::Neon, &[1, 2, 3], 2, 2, 0)
            .err()
            .unwrap();
        assert!(error.to_string().contains("[2, 2]"), "{error}");
        let error = Int8Weights::pack(Kernel::Avx2, &[], 3, 0, 0).err().unwrap();
        assert!(error.to_string().contains("[3, 0]"), "{error}");
    }
}
