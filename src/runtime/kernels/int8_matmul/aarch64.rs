//! The aarch64 kernels. Both multiply signed bytes: the activations come shifted by -128 (`Activations`).

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Activations, Int8Weights, K_ALIGN, K_STEP, Kernel, Sums, Tile};

pub(super) fn available(kernel: Kernel) -> bool {
    match kernel {
        Kernel::Sdot => std::arch::is_aarch64_feature_detected!("dotprod"),
        Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        Kernel::Avx512Vnni | Kernel::AvxVnni | Kernel::Avx2 => false,
    }
}

// Five rows at most: each row holds one register of activations besides its accumulators, and at six LLVM
// spills accumulators to the stack inside the loop.
const SDOT: [Tile; 5] = [sdot::<1>, sdot::<2>, sdot::<3>, sdot::<4>, sdot::<5>];
const NEON: [Tile; 5] = [neon::<1>, neon::<2>, neon::<3>, neon::<4>, neon::<5>];

pub(super) fn tiles(kernel: Kernel) -> &'static [Tile] {
    match kernel {
        Kernel::Sdot => &SDOT,
        Kernel::Neon => &NEON,
        Kernel::Avx512Vnni | Kernel::AvxVnni | Kernel::Avx2 => &[],
    }
}

/// `sum += ` the dot products of each column's 4 bytes in `w` with the 4 bytes of lane `lane` of `a`. Rust's
/// dot-product intrinsics are not stable, so the instruction is written out; it touches only registers.
macro_rules! sdot_lane {
    ($sum:expr, $w:expr, $a:expr, $lane:literal) => {
        asm!(
            "sdot {sum:v}.4s, {w:v}.16b, {a:v}.4b[{lane}]",
            sum = inout(vreg) $sum,
            w = in(vreg) $w,
            a = in(vreg) $a,
            lane = const $lane,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
}

/// 16 columns (4 vectors of 4 columns' 4 bytes). A row's 16 bytes (4 steps) are read at once and each step's 4
/// taken as a lane of them, so that a step costs one load and one SDOT per vector and row: 5 rows x 4 vectors is 20
/// accumulators, 5 rows and 4 weight vectors, of 32 registers.
///
/// # Safety
/// The CPU has the dot product; the weights are packed for `Kernel::Sdot`; rows `first_row..first_row + R` exist;
/// `sums` has `R` rows of the group's columns.
#[target_feature(enable = "dotprod")]
unsafe fn sdot<const R: usize>(
    weights: &Int8Weights,
    activations: &Activations,
    group: usize,
    first_row: usize,
    sums: Sums,
) {
    const BLOCK: usize = 16 * K_STEP;
    let blocks = weights.group(group);
    let rows: [*const i8; R] = std::array::from_fn(|r| activations.row(first_row + r).cast());
    let mut accumulators = [[vdupq_n_s32(0); 4]; R];
    for chunk in 0..weights.steps * K_STEP / K_ALIGN {
        // SAFETY: the rows have whole chunks of 16 bytes; the group has `steps` blocks of 64 bytes, a multiple of 4.
        unsafe {
            let a: [int8x16_t; R] = std::array::from_fn(|r| vld1q_s8(rows[r].add(chunk * K_ALIGN)));
            let chunk_blocks = blocks.add(chunk * 4 * BLOCK);
            macro_rules! step {
                ($lane:literal) => {
                    let block = chunk_blocks.add($lane * BLOCK);
                    let w = [
                        vld1q_s8(block),
                        vld1q_s8(block.add(16)),
                        vld1q_s8(block.add(32)),
                        vld1q_s8(block.add(48)),
                    ];
                    for (a, accumulators) in a.iter().zip(&mut accumulators) {
                        for (sum, w) in accumulators.iter_mut().zip(w) {
                            sdot_lane!(*sum, w, *a, $lane);
                        }
                    }
                };
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
        }
    }
    for (r, accumulators) in accumulators.iter().enumerate() {
        for (b, &sum) in accumulators.iter().enumerate() {
            // SAFETY: `sums` has R rows of the group's columns.
            unsafe { vst1q_s32(sums.at.add(r * sums.stride + b * 4), sum) };
        }
    }
}

/// `sum += ` the products of the 16 bytes of `a` and `w`, in pairs: `smull` and `smull2` into exact 16-bit
/// products, each added in pairs into the 4 lanes (`sadalp`). Written out as one block: left to itself LLVM turns
/// two `sadalp` in a row into `saddlp` + `sadalp` + `add` (one instruction more), and at 5 rows its scheduling
/// of the products spills accumulators to the stack.
macro_rules! multiply_add_16 {
    ($sum:expr, $a:expr, $w:expr) => {
        asm!(
            "smull {products:v}.8h, {a:v}.8b, {w:v}.8b",
            "sadalp {sum:v}.4s, {products:v}.8h",
            "smull2 {products:v}.8h, {a:v}.16b, {w:v}.16b",
            "sadalp {sum:v}.4s, {products:v}.8h",
            sum = inout(vreg) $sum,
            a = in(vreg) $a,
            w = in(vreg) $w,
            products = out(vreg) _,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
}

/// 16 columns, for cores without the dot product, 4 at a time. Each column's weights come in runs of 16 k values
/// (`Kernel::k_run`), so a row's 16 activations multiply a column's 16 weights as they are (`multiply_add_16`),
/// 4 instructions per 16 multiply-adds and no broadcast; the lanes are added up once, at the end. 5 rows x 4
/// columns is 20 accumulators, with 5 rows and a column's weights, of 32 registers. A call covers 16 columns so
/// that its set-up is spread over more than one k = 32 product's few steps (the demo's vocabulary projection).
///
/// # Safety
/// The weights are packed for `Kernel::Neon`; rows `first_row..first_row + R` exist; `sums` has `R` rows of the
/// group's columns.
unsafe fn neon<const R: usize>(
    weights: &Int8Weights,
    activations: &Activations,
    group: usize,
    first_row: usize,
    sums: Sums,
) {
    const COLUMNS: usize = 4;
    const GROUP: usize = 16;
    let blocks = weights.group(group);
    let rows: [*const u8; R] = std::array::from_fn(|r| activations.row(first_row + r));
    for part in 0..GROUP / COLUMNS {
        // SAFETY: every aarch64 core has NEON.
        let mut accumulators = [[unsafe { vdupq_n_s32(0) }; COLUMNS]; R];
        for chunk in 0..weights.steps * K_STEP / K_ALIGN {
            // SAFETY: the group has a block of 16 columns' 16 bytes for every 16 of the padded k; the rows have
            // whole chunks of 16 bytes.
            unsafe {
                let a: [int8x16_t; R] =
                    std::array::from_fn(|r| vld1q_s8(rows[r].add(chunk * K_ALIGN).cast()));
                let block = blocks.add((chunk * GROUP + part * COLUMNS) * K_ALIGN);
                for column in 0..COLUMNS {
                    let w = vld1q_s8(block.add(column * K_ALIGN));
                    for (a, accumulators) in a.iter().zip(&mut accumulators) {
                        multiply_add_16!(accumulators[column], *a, w);
                    }
                }
            }
        }
        for (r, [c0, c1, c2, c3]) in accumulators.iter().enumerate() {
            // SAFETY: every aarch64 core has NEON; `sums` has R rows of the group's columns.
            unsafe {
                let columns = vpaddq_s32(vpaddq_s32(*c0, *c1), vpaddq_s32(*c2, *c3));
                vst1q_s32(sums.at.add(r * sums.stride + part * COLUMNS), columns);
            }
        }
    }
}
