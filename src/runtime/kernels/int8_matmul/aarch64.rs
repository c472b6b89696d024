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

/// `smull2`: the high 8 bytes of `w` times those of `a`, into 16-bit products. Written out because, given a row's
/// 4 bytes repeated, LLVM computes `vmull_high_s8` as an `ext` of the weights and an `smull`: one instruction more
/// per 16 weights.
macro_rules! smull_high {
    ($w:expr, $a:expr) => {{
        let products: int16x8_t;
        asm!(
            "smull2 {products:v}.8h, {w:v}.16b, {a:v}.16b",
            products = out(vreg) products,
            w = in(vreg) $w,
            a = in(vreg) $a,
            options(pure, nomem, nostack, preserves_flags),
        );
        products
    }};
}

/// 8 columns (2 vectors of 4 columns' 4 bytes), for cores without the dot product: `smull`/`smull2` multiply the
/// bytes into exact 16-bit products (at most 128 x 128), `sadalp` adds them in pairs into 32-bit lanes. Each lane
/// holds half a column's sum (2 of each step's 4 k values), so 5 rows x 4 accumulators; the halves are added at
/// the end. Four steps per iteration, so that the loop's own instructions are spread over 32 multiplications.
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
    const BLOCK: usize = 8 * K_STEP;
    const STEPS: usize = K_ALIGN / K_STEP;
    let blocks = weights.group(group);
    let rows: [*const u8; R] = std::array::from_fn(|r| activations.row(first_row + r));
    // SAFETY: every aarch64 core has NEON.
    let mut accumulators = [[unsafe { vdupq_n_s32(0) }; 4]; R];
    for chunk in 0..weights.steps / STEPS {
        // SAFETY: the group has `steps` blocks of 32 bytes (`steps` a multiple of 4); the rows have whole chunks
        // of 16 bytes.
        unsafe {
            // With one or two rows, a row's 16 bytes (4 steps) are read at once and each step's 4 repeated from a
            // lane of them, which spares the address arithmetic of four loads; with more, the rows' registers
            // would crowd out the accumulators, and each step's 4 bytes are loaded repeated (`ld1r`).
            let by_lane = R <= 2;
            let chunk_rows: [*const u8; R] = std::array::from_fn(|r| rows[r].add(chunk * K_ALIGN));
            let a: [int32x4_t; R] = std::array::from_fn(|r| {
                if by_lane {
                    vreinterpretq_s32_u8(vld1q_u8(chunk_rows[r]))
                } else {
                    vdupq_n_s32(0)
                }
            });
            let chunk_blocks = blocks.add(chunk * STEPS * BLOCK);
            macro_rules! step {
                ($lane:literal) => {
                    let block = chunk_blocks.add($lane * BLOCK);
                    let w = [vld1q_s8(block), vld1q_s8(block.add(16))];
                    for ((a, row), accumulators) in a.iter().zip(chunk_rows).zip(&mut accumulators)
                    {
                        let a = vreinterpretq_s8_s32(if by_lane {
                            vdupq_laneq_s32::<$lane>(*a)
                        } else {
                            vld1q_dup_s32(row.add($lane * K_STEP).cast())
                        });
                        for (halves, w) in accumulators.chunks_exact_mut(2).zip(w) {
                            halves[0] =
                                vpadalq_s16(halves[0], vmull_s8(vget_low_s8(w), vget_low_s8(a)));
                            halves[1] = vpadalq_s16(halves[1], smull_high!(w, a));
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
        for (b, halves) in accumulators.chunks_exact(2).enumerate() {
            // SAFETY: `sums` has R rows of the group's columns.
            unsafe {
                vst1q_s32(
                    sums.at.add(r * sums.stride + b * 4),
                    vpaddq_s32(halves[0], halves[1]),
                )
            };
        }
    }
}
