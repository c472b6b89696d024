//! The x86-64 kernels. Each step multiplies a block of 4 k values of a group's columns by the same 4 values of
//! every row, the row's 4 bytes broadcast to every column.

use std::arch::x86_64::*;

use super::{Activations, Int8Weights, K_STEP, Kernel, Sums, Tile};

pub(super) fn available(kernel: Kernel) -> bool {
    match kernel {
        Kernel::Avx512Vnni => {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        }
        Kernel::AvxVnni => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni"),
        Kernel::Avx2 => is_x86_feature_detected!("avx2"),
        Kernel::Sdot | Kernel::Neon => false,
    }
}

const AVX512_VNNI: [Tile; 6] = [
    avx512_vnni::<1>,
    avx512_vnni::<2>,
    avx512_vnni::<3>,
    avx512_vnni::<4>,
    avx512_vnni::<5>,
    avx512_vnni::<6>,
];
const AVX_VNNI: [Tile; 6] = [
    avx_vnni::<1>,
    avx_vnni::<2>,
    avx_vnni::<3>,
    avx_vnni::<4>,
    avx_vnni::<5>,
    avx_vnni::<6>,
];
const AVX2: [Tile; 6] = [
    avx2::<1>, avx2::<2>, avx2::<3>, avx2::<4>, avx2::<5>, avx2::<6>,
];

pub(super) fn tiles(kernel: Kernel) -> &'static [Tile] {
    match kernel {
        Kernel::Avx512Vnni => &AVX512_VNNI,
        Kernel::AvxVnni => &AVX_VNNI,
        Kernel::Avx2 => &AVX2,
        Kernel::Sdot | Kernel::Neon => &[],
    }
}

/// A row's 4 bytes at a step, read as one value.
///
/// # Safety
/// `row` is a padded row of the activations (16-byte aligned, whole steps), `step` one of its steps.
unsafe fn four_bytes(row: *const u8, step: usize) -> i32 {
    // SAFETY: as the caller promised; rows are 16-byte aligned and steps 4 bytes.
    unsafe { row.add(step * K_STEP).cast::<i32>().read() }
}

/// 64 columns (4 vectors of 16 columns' 4 bytes), 4 VNNI instructions per row and step. 6 rows x 4 vectors is 24
/// accumulators of AVX-512's 32 registers.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI; the weights are packed for `Kernel::Avx512Vnni`; rows `first_row..first_row
/// + R` exist; `sums` has `R` rows of the group's columns.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn avx512_vnni<const R: usize>(
    weights: &Int8Weights,
    activations: &Activations,
    group: usize,
    first_row: usize,
    sums: Sums,
) {
    let blocks = weights.group(group).cast::<__m512i>();
    let rows: [*const u8; R] = std::array::from_fn(|r| activations.row(first_row + r));
    let mut accumulators = [[_mm512_setzero_si512(); 4]; R];
    for step in 0..weights.steps {
        // SAFETY: the group has `steps` blocks of 4 aligned vectors; the rows have `steps` steps.
        unsafe {
            let block = blocks.add(step * 4);
            prefetch_ahead(block.cast(), 256);
            let w = [
                _mm512_load_si512(block),
                _mm512_load_si512(block.add(1)),
                _mm512_load_si512(block.add(2)),
                _mm512_load_si512(block.add(3)),
            ];
            for (row, accumulators) in rows.iter().zip(&mut accumulators) {
                let a = _mm512_set1_epi32(four_bytes(*row, step));
                for (sum, w) in accumulators.iter_mut().zip(w) {
                    *sum = _mm512_dpbusd_epi32(*sum, a, w);
                }
            }
        }
    }
    for (r, accumulators) in accumulators.iter().enumerate() {
        for (b, &sum) in accumulators.iter().enumerate() {
            // SAFETY: `sums` has R rows of the group's columns.
            unsafe { _mm512_storeu_si512(sums.at.add(r * sums.stride + b * 16).cast(), sum) };
        }
    }
}

/// 16 columns (2 vectors of 8 columns' 4 bytes): AVX2 has 16 registers, so 6 rows x 2 vectors of accumulators.
///
/// # Safety
/// The CPU has AVX2 and AVX-VNNI; the weights are packed for `Kernel::AvxVnni`; rows `first_row..first_row + R`
/// exist; `sums` has `R` rows of the group's columns.
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn avx_vnni<const R: usize>(
    weights: &Int8Weights,
    activations: &Activations,
    group: usize,
    first_row: usize,
    sums: Sums,
) {
    let blocks = weights.group(group).cast::<__m256i>();
    let rows: [*const u8; R] = std::array::from_fn(|r| activations.row(first_row + r));
    let mut accumulators = [[_mm256_setzero_si256(); 2]; R];
    for step in 0..weights.steps {
        // SAFETY: the group has `steps` blocks of 2 vectors; the rows have `steps` steps.
        unsafe {
            let block = blocks.add(step * 2);
            prefetch_ahead(block.cast(), 64);
            let w = [_mm256_loadu_si256(block), _mm256_loadu_si256(block.add(1))];
            for (row, accumulators) in rows.iter().zip(&mut accumulators) {
                let a = _mm256_set1_epi32(four_bytes(*row, step));
                for (sum, w) in accumulators.iter_mut().zip(w) {
                    *sum = _mm256_dpbusd_avx_epi32(*sum, a, w);
                }
            }
        }
    }
    for (r, accumulators) in accumulators.iter().enumerate() {
        for (b, &sum) in accumulators.iter().enumerate() {
            // SAFETY: `sums` has R rows of the group's columns.
            unsafe { _mm256_storeu_si256(sums.at.add(r * sums.stride + b * 8).cast(), sum) };
        }
    }
}

/// 8 columns (2 vectors of 4 columns' 4 bytes, widened to 16 bits). `vpmaddwd` multiplies 16-bit pairs into
/// exact 32-bit sums; `vpmaddubsw`, which would take the bytes as they are, saturates its 16-bit sums, and so
/// would not be tract's result. Each accumulator lane holds half a column's sum (2 of each step's 4 k values); the
/// halves are added at the end.
///
/// # Safety
/// The CPU has AVX2; the weights are packed for `Kernel::Avx2`; rows `first_row..first_row + R` exist; `sums`
/// has `R` rows of the group's columns.
#[target_feature(enable = "avx2")]
unsafe fn avx2<const R: usize>(
    weights: &Int8Weights,
    activations: &Activations,
    group: usize,
    first_row: usize,
    sums: Sums,
) {
    let blocks = weights.group(group).cast::<__m128i>();
    let rows: [*const u8; R] = std::array::from_fn(|r| activations.row(first_row + r));
    let mut accumulators = [[_mm256_setzero_si256(); 2]; R];
    for step in 0..weights.steps {
        // SAFETY: the group has `steps` blocks of 2 x 16 bytes; the rows have `steps` steps of 8 aligned bytes (16-bit
        // values, `Activations`).
        unsafe {
            let block = blocks.add(step * 2);
            prefetch_ahead(block.cast(), 32);
            let w = [
                _mm256_cvtepi8_epi16(_mm_loadu_si128(block)),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(block.add(1))),
            ];
            for (row, accumulators) in rows.iter().zip(&mut accumulators) {
                // The row's 4 values, already 16-bit (`Activations`), repeated for the 4 columns.
                let a = _mm256_set1_epi64x(row.add(step * 2 * K_STEP).cast::<i64>().read());
                for (sum, w) in accumulators.iter_mut().zip(w) {
                    *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(w, a));
                }
            }
        }
    }
    for (r, [low, high]) in accumulators.iter().enumerate() {
        // Halves added: columns 0 1 4 5 | 2 3 6 7, then the 64-bit lanes put in order.
        let columns = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(*low, *high));
        // SAFETY: `sums` has R rows of the group's columns.
        unsafe { _mm256_storeu_si256(sums.at.add(r * sums.stride).cast(), columns) };
    }
}

/// How far ahead of the multiplications the weights are asked for. With several rows a group's multiplications
/// take long enough that the hardware prefetcher alone falls behind the loads, and a beam step took half as long
/// again (BENCHMARKS.md, "Prefetching the weights").
const PREFETCH_DISTANCE: usize = 2048;

/// Asks for the cache lines `PREFETCH_DISTANCE` bytes after the `bytes` of weights at `step`. Past the group's
/// end that is the next group's (or nothing: a prefetch never faults, and `wrapping_add` makes no claim on the
/// allocation).
#[inline(always)]
fn prefetch_ahead(step: *const i8, bytes: usize) {
    for line in (0..bytes).step_by(64) {
        // SAFETY: a prefetch reads nothing into the program and cannot fault, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(step.wrapping_add(PREFETCH_DISTANCE + line)) };
    }
}
