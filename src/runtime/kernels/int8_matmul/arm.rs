//! The armv7 kernel: `Kernel::Neon`'s packing and arithmetic (`vmull.s8` + `vpadal.s16`, the 32-bit names of
//! aarch64's `smull` + `sadalp`), for 32-bit Pi OS and other armv7 boards with NEON. Rust's arm NEON intrinsics
//! and the `neon` target feature are not stable, so each tile is one `asm!` block that enables NEON for the
//! assembler (`.fpu neon`) and runs the whole loop over k.
//!
//! Registers: the target (`armv7-unknown-linux-gnueabihf`, VFPv3-D16) gives the compiler d0-d15 only, so the
//! tiles use q8-q15 (d16-d31), which every NEON core has and which no code of this target can hold a value in,
//! and declare what they use of d0-d15 as clobbered. 16 registers of 128 bits: 2 rows x 4 columns of accumulators
//! at most, so a beam of 5 is three passes (2 + 2 + 1).

use std::arch::asm;

use super::{Activations, Int8Weights, K_ALIGN, K_STEP, Kernel, Sums, Tile};

/// `HWCAP_NEON` of Linux's arm `hwcap.h`: the kernel's word that the CPU has Advanced SIMD.
const HWCAP_NEON: libc::c_ulong = 1 << 12;

pub(super) fn available(kernel: Kernel) -> bool {
    match kernel {
        Kernel::Neon => {
            // SAFETY: getauxval only reads the auxiliary vector the kernel gave the process.
            let hwcap = unsafe { libc::getauxval(libc::AT_HWCAP) };
            hwcap & HWCAP_NEON != 0
        }
        Kernel::Avx512Vnni | Kernel::AvxVnni | Kernel::Avx2 | Kernel::Sdot => false,
    }
}

const NEON: [Tile; 2] = [neon::<1>, neon::<2>];

pub(super) fn tiles(kernel: Kernel) -> &'static [Tile] {
    match kernel {
        Kernel::Neon => &NEON,
        Kernel::Avx512Vnni | Kernel::AvxVnni | Kernel::Avx2 | Kernel::Sdot => &[],
    }
}

/// Columns of a group (`Kernel::group_columns`) and of one pass of a tile's loop.
const GROUP: usize = 16;
const COLUMNS: usize = 4;

/// 16 columns, 4 at a time, of 1 or 2 rows: per 16 k, a row's 16 bytes times a column's 16 (`vmull.s8` twice, into
/// exact 16-bit products), added in pairs into the row and column's 4 lanes (`vpadal.s16` twice); the lanes are
/// added up at the end.
///
/// # Safety
/// The CPU has NEON (`available`); the weights are packed for `Kernel::Neon`; rows `first_row..first_row + R` exist;
/// `sums` has `R` rows of the group's columns.
unsafe fn neon<const R: usize>(
    weights: &Int8Weights,
    activations: &Activations,
    group: usize,
    first_row: usize,
    sums: Sums,
) {
    let chunks = weights.steps * K_STEP / K_ALIGN;
    // Bytes from one chunk's 4 columns to the next chunk's, after the loop has read them.
    let skip = (GROUP - COLUMNS) * K_ALIGN;
    for part in 0..GROUP / COLUMNS {
        // SAFETY: the group has a block of 16 columns' 16 bytes for every 16 of the padded k, so `chunks` blocks from
        // this part's first column; each row has `chunks` whole chunks of 16 bytes; `sums` has R rows of this part's
        // 4 columns. The block writes only those and the registers it declares, and q8-q15, which code of this
        // target never holds values in (module comment).
        unsafe {
            let w = weights.group(group).add(part * COLUMNS * K_ALIGN);
            let out = sums.at.add(part * COLUMNS);
            if R == 1 {
                asm!(
                    ".fpu neon",
                    "vmov.i32 q8, #0",
                    "vmov.i32 q9, #0",
                    "vmov.i32 q10, #0",
                    "vmov.i32 q11, #0",
                    "2:",
                    "vld1.8 {{d24, d25}}, [{a0}]!",
                    "vld1.8 {{d26, d27}}, [{w}]!",
                    "vmull.s8 q14, d24, d26",
                    "vpadal.s16 q8, q14",
                    "vmull.s8 q14, d25, d27",
                    "vpadal.s16 q8, q14",
                    "vld1.8 {{d26, d27}}, [{w}]!",
                    "vmull.s8 q14, d24, d26",
                    "vpadal.s16 q9, q14",
                    "vmull.s8 q14, d25, d27",
                    "vpadal.s16 q9, q14",
                    "vld1.8 {{d26, d27}}, [{w}]!",
                    "vmull.s8 q14, d24, d26",
                    "vpadal.s16 q10, q14",
                    "vmull.s8 q14, d25, d27",
                    "vpadal.s16 q10, q14",
                    "vld1.8 {{d26, d27}}, [{w}]!",
                    "vmull.s8 q14, d24, d26",
                    "vpadal.s16 q11, q14",
                    "vmull.s8 q14, d25, d27",
                    "vpadal.s16 q11, q14",
                    "add {w}, {w}, {skip}",
                    "subs {n}, {n}, #1",
                    "bne 2b",
                    "vpadd.i32 d16, d16, d17",
                    "vpadd.i32 d18, d18, d19",
                    "vpadd.i32 d20, d20, d21",
                    "vpadd.i32 d22, d22, d23",
                    "vpadd.i32 d16, d16, d18",
                    "vpadd.i32 d17, d20, d22",
                    "vst1.32 {{d16, d17}}, [{out0}]",
                    a0 = inout(reg) activations.row(first_row) => _,
                    w = inout(reg) w => _,
                    n = inout(reg) chunks => _,
                    skip = in(reg) skip,
                    out0 = in(reg) out,
                    options(nostack),
                );
            } else {
                asm!(
                    ".fpu neon",
                    "vmov.i32 q8, #0",
                    "vmov.i32 q9, #0",
                    "vmov.i32 q10, #0",
                    "vmov.i32 q11, #0",
                    "vmov.i32 q0, #0",
                    "vmov.i32 q1, #0",
                    "vmov.i32 q2, #0",
                    "vmov.i32 q3, #0",
                    "2:",
                    "vld1.8 {{d24, d25}}, [{a0}]!",
                    "vld1.8 {{d26, d27}}, [{a1}]!",
                    "vld1.8 {{d28, d29}}, [{w}]!",
                    "vmull.s8 q15, d24, d28",
                    "vpadal.s16 q8, q15",
                    "vmull.s8 q15, d25, d29",
                    "vpadal.s16 q8, q15",
                    "vmull.s8 q15, d26, d28",
                    "vpadal.s16 q0, q15",
                    "vmull.s8 q15, d27, d29",
                    "vpadal.s16 q0, q15",
                    "vld1.8 {{d28, d29}}, [{w}]!",
                    "vmull.s8 q15, d24, d28",
                    "vpadal.s16 q9, q15",
                    "vmull.s8 q15, d25, d29",
                    "vpadal.s16 q9, q15",
                    "vmull.s8 q15, d26, d28",
                    "vpadal.s16 q1, q15",
                    "vmull.s8 q15, d27, d29",
                    "vpadal.s16 q1, q15",
                    "vld1.8 {{d28, d29}}, [{w}]!",
                    "vmull.s8 q15, d24, d28",
                    "vpadal.s16 q10, q15",
                    "vmull.s8 q15, d25, d29",
                    "vpadal.s16 q10, q15",
                    "vmull.s8 q15, d26, d28",
                    "vpadal.s16 q2, q15",
                    "vmull.s8 q15, d27, d29",
                    "vpadal.s16 q2, q15",
                    "vld1.8 {{d28, d29}}, [{w}]!",
                    "vmull.s8 q15, d24, d28",
                    "vpadal.s16 q11, q15",
                    "vmull.s8 q15, d25, d29",
                    "vpadal.s16 q11, q15",
                    "vmull.s8 q15, d26, d28",
                    "vpadal.s16 q3, q15",
                    "vmull.s8 q15, d27, d29",
                    "vpadal.s16 q3, q15",
                    "add {w}, {w}, {skip}",
                    "subs {n}, {n}, #1",
                    "bne 2b",
                    "vpadd.i32 d16, d16, d17",
                    "vpadd.i32 d18, d18, d19",
                    "vpadd.i32 d20, d20, d21",
                    "vpadd.i32 d22, d22, d23",
                    "vpadd.i32 d16, d16, d18",
                    "vpadd.i32 d17, d20, d22",
                    "vst1.32 {{d16, d17}}, [{out0}]",
                    "vpadd.i32 d0, d0, d1",
                    "vpadd.i32 d2, d2, d3",
                    "vpadd.i32 d4, d4, d5",
                    "vpadd.i32 d6, d6, d7",
                    "vpadd.i32 d0, d0, d2",
                    "vpadd.i32 d1, d4, d6",
                    "vst1.32 {{d0, d1}}, [{out1}]",
                    a0 = inout(reg) activations.row(first_row) => _,
                    a1 = inout(reg) activations.row(first_row + 1) => _,
                    w = inout(reg) w => _,
                    n = inout(reg) chunks => _,
                    skip = in(reg) skip,
                    out0 = in(reg) out,
                    out1 = in(reg) out.add(sums.stride),
                    out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                    out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                    options(nostack),
                );
            }
        }
    }
}
