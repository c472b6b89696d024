//! Attention's products over many rows (the ViT's 50 patches against themselves), in register tiles of fused
//! multiply-adds. Each value is summed as tract's f32 kernels sum it: one accumulator from zero, the summed axis in
//! order, `s = a[i, t] * b[t, j] + s` rounded once a step (`vfmadd`, `fmla`). The tiles' shape changes which values
//! share a loop, never a value's sum, so these are tract's bits, on every CPU that runs them. Only CPUs with fused
//! multiply-add run them (x86-64 with FMA, aarch64): elsewhere tract's kernels do not fuse either, and the graph
//! keeps tract's product (`AttentionMatMul::pays_off_for`).
// Elsewhere (armv7) no kernel instantiates the tiles, and the products stay tract's.
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]

use super::Product;

/// Rows of a tile: with [`Lanes::PANEL`] columns, as many accumulators as the registers hold beside one panel of
/// `b` and the broadcast value of `a`.
const TILE_ROWS: usize = 6;

/// A kernel for one batch item's product; `scratch` holds `b` repacked when its columns are not contiguous.
pub(super) type TileKernel = unsafe fn(&Product, &[f32], &[f32], *mut f32, &mut Vec<f32>);

/// The tiled kernel for this CPU, the widest, or `None` without fused multiply-add.
pub(super) fn kernel() -> Option<TileKernel> {
    kernels().first().map(|&(_, kernel)| kernel)
}

/// Every tiled kernel this CPU runs, by name, the widest first.
pub(super) fn kernels() -> &'static [(&'static str, TileKernel)] {
    static KERNELS: std::sync::OnceLock<Vec<(&'static str, TileKernel)>> =
        std::sync::OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let mut kernels: Vec<(&'static str, TileKernel)> = Vec::new();
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(("avx512", x86::avx512));
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                kernels.push(("avx2", x86::avx2));
            }
            kernels
        }
        #[cfg(target_arch = "aarch64")]
        {
            vec![("neon", aarch64::neon as TileKernel)]
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Vec::new()
        }
    })
}

/// A CPU's f32 vector with fused multiply-add, the few operations the tiles are written in. Each is `unsafe`: the
/// caller runs on a CPU with the instruction set.
trait Lanes: Copy {
    /// Values in one vector, at most 16.
    const WIDTH: usize;
    /// Vectors across a tile's panel of columns.
    const PANEL: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(value: f32) -> Self;
    /// # Safety
    /// `WIDTH` values readable at `from`.
    unsafe fn load(from: *const f32) -> Self;
    /// `a * b + sum`, rounded once.
    unsafe fn fused(a: Self, b: Self, sum: Self) -> Self;
    /// # Safety
    /// `WIDTH` values writable at `to`.
    unsafe fn store(self, to: *mut f32);
    /// [`Tile::product`] compiled for the instruction set, apart, so that its sums stay in registers.
    ///
    /// # Safety
    /// As [`Tile::product`].
    unsafe fn tile<const ROWS: usize>(tile: &Tile, out: &Out);
}

/// Columns in one panel.
const fn panel_columns<V: Lanes>() -> usize {
    V::PANEL * V::WIDTH
}

/// The whole product of one batch item, panel of columns by tile of rows.
///
/// # Safety
/// The CPU has `V`'s instructions; `a`, `b` and `c` hold the product's values at its strides (`Product::run`).
#[inline(always)]
unsafe fn product<V: Lanes>(
    p: &Product,
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    scratch: &mut Vec<f32>,
) {
    let Product {
        rows,
        columns,
        depth,
        ..
    } = *p;
    let [a_row, a_sum] = p.a;
    let [b_sum, b_column] = p.b;
    let [c_row, c_column] = p.c;
    let last =
        |extents: [(usize, usize); 2]| extents.iter().map(|&(n, s)| (n - 1) * s).sum::<usize>();
    assert!(rows > 0 && columns > 0 && depth > 0);
    assert!(last([(rows, a_row), (depth, a_sum)]) < a.len());
    assert!(last([(depth, b_sum), (columns, b_column)]) < b.len());
    let width = panel_columns::<V>();
    let padded = columns.div_ceil(width) * width;
    // `b` with each step's columns side by side and whole panels: as it lies (the values' rows), or copied with
    // zeros past its last column (the keys, whose values are the columns).
    let (packed, packed_row) = if b_column == 1 && columns == padded {
        (b.as_ptr(), b_sum)
    } else {
        scratch.clear();
        scratch.resize(depth * padded, 0.0);
        // Column by column: a column of `b` (a key) lies in a few lines, where its steps at a fixed column, a
        // key's length apart, would fall into a few cache sets.
        for j in 0..columns {
            for t in 0..depth {
                // SAFETY: step `t`, column `j` of `b` (asserted inside above), and of `scratch`.
                unsafe {
                    *scratch.get_unchecked_mut(t * padded + j) =
                        *b.get_unchecked(t * b_sum + j * b_column)
                };
            }
        }
        (scratch.as_ptr(), padded)
    };
    for first_column in (0..padded).step_by(width) {
        // SAFETY: the panel's columns are inside `packed`'s rows of `padded` (or `b_sum`) values.
        let panel = unsafe { packed.add(first_column) };
        for first_row in (0..rows).step_by(TILE_ROWS) {
            let tile = Tile {
                a: a[first_row * a_row..].as_ptr(),
                a_row,
                a_sum,
                depth,
                b: panel,
                b_row: packed_row,
            };
            let out = Out {
                // SAFETY: row `first_row`, column `first_column` of the product (the caller's).
                c: unsafe { c.add(first_row * c_row + first_column * c_column) },
                c_row,
                c_column,
                columns: (columns - first_column).min(width),
            };
            // SAFETY: the tile's rows, `depth` steps and panel are inside `a` and `packed` (asserted above), its
            // rows and columns inside the product.
            unsafe {
                match rows - first_row {
                    1 => V::tile::<1>(&tile, &out),
                    2 => V::tile::<2>(&tile, &out),
                    3 => V::tile::<3>(&tile, &out),
                    4 => V::tile::<4>(&tile, &out),
                    5 => V::tile::<5>(&tile, &out),
                    _ => V::tile::<TILE_ROWS>(&tile, &out),
                }
            }
        }
    }
}

/// One tile's inputs: `ROWS` rows of `a` and a panel of `b`'s packed rows.
struct Tile {
    a: *const f32,
    a_row: usize,
    a_sum: usize,
    depth: usize,
    b: *const f32,
    b_row: usize,
}

/// Where a tile's values go: its first value, the product's strides, and how many of the panel's columns are the
/// product's.
struct Out {
    c: *mut f32,
    c_row: usize,
    c_column: usize,
    columns: usize,
}

impl Tile {
    /// Sums `ROWS` rows by a panel and writes them out.
    ///
    /// # Safety
    /// The CPU has `V`'s instructions; `ROWS` rows by `depth` steps of `a` and `depth` rows of a panel of `b` are
    /// readable; `ROWS` rows by `out.columns` columns are writable at `out`.
    #[inline(always)]
    unsafe fn product<V: Lanes, const ROWS: usize, const PANEL: usize>(&self, out: &Out) {
        const { assert!(V::WIDTH <= 16 && PANEL == V::PANEL) };
        // SAFETY (every block below): the caller's.
        let mut sums = [[unsafe { V::zero() }; PANEL]; ROWS];
        for t in 0..self.depth {
            let b_row = unsafe { self.b.add(t * self.b_row) };
            let b: [V; PANEL] =
                std::array::from_fn(|v| unsafe { V::load(b_row.add(v * V::WIDTH)) });
            for (r, row) in sums.iter_mut().enumerate() {
                let a = unsafe { V::splat(*self.a.add(r * self.a_row + t * self.a_sum)) };
                for (sum, &b) in row.iter_mut().zip(&b) {
                    *sum = unsafe { V::fused(a, b, *sum) };
                }
            }
        }
        for (r, row) in sums.into_iter().enumerate() {
            let c_row = unsafe { out.c.add(r * out.c_row) };
            for (v, sum) in row.into_iter().enumerate() {
                let first = v * V::WIDTH;
                if out.c_column == 1 && first + V::WIDTH <= out.columns {
                    unsafe { sum.store(c_row.add(first)) };
                } else if first < out.columns {
                    let mut values = [0f32; 16];
                    unsafe { sum.store(values.as_mut_ptr()) };
                    for (j, &value) in values.iter().enumerate().take(out.columns - first) {
                        unsafe { c_row.add((first + j) * out.c_column).write(value) };
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, Out, Product, Tile, product};
    use std::arch::x86_64::*;

    /// [`Lanes`] for one vector type by its intrinsics, and the whole product on it, compiled with `$features`.
    macro_rules! x86_lanes {
        ($vector:ty, $width:literal, $panel:literal, $features:literal, $entry:ident,
         $zero:ident, $splat:ident, $load:ident, $fused:ident, $store:ident) => {
            impl Lanes for $vector {
                const WIDTH: usize = $width;
                const PANEL: usize = $panel;
                #[inline(always)]
                unsafe fn zero() -> Self {
                    unsafe { $zero() }
                }
                #[inline(always)]
                unsafe fn splat(value: f32) -> Self {
                    unsafe { $splat(value) }
                }
                #[inline(always)]
                unsafe fn load(from: *const f32) -> Self {
                    unsafe { $load(from) }
                }
                #[inline(always)]
                unsafe fn fused(a: Self, b: Self, sum: Self) -> Self {
                    unsafe { $fused(a, b, sum) }
                }
                #[inline(always)]
                unsafe fn store(self, to: *mut f32) {
                    unsafe { $store(to, self) }
                }
                #[target_feature(enable = $features)]
                #[inline(never)]
                unsafe fn tile<const ROWS: usize>(tile: &Tile, out: &Out) {
                    unsafe { tile.product::<Self, ROWS, $panel>(out) }
                }
            }

            #[doc = concat!("# Safety\nThe CPU has ", $features, "; the rest as [`product`].")]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $entry(
                p: &Product,
                a: &[f32],
                b: &[f32],
                c: *mut f32,
                s: &mut Vec<f32>,
            ) {
                unsafe { product::<$vector>(p, a, b, c, s) }
            }
        };
    }

    x86_lanes!(
        __m512,
        16,
        4,
        "avx512f",
        avx512,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
    x86_lanes!(
        __m256,
        8,
        2,
        "avx2,fma",
        avx2,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
}

#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use super::{Lanes, Out, Product, Tile, product};
    use std::arch::aarch64::*;

    impl Lanes for float32x4_t {
        const WIDTH: usize = 4;
        const PANEL: usize = 4;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { vdupq_n_f32(0.0) }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            unsafe { vdupq_n_f32(value) }
        }
        #[inline(always)]
        unsafe fn load(from: *const f32) -> Self {
            unsafe { vld1q_f32(from) }
        }
        #[inline(always)]
        unsafe fn fused(a: Self, b: Self, sum: Self) -> Self {
            unsafe { vfmaq_f32(sum, a, b) }
        }
        #[inline(always)]
        unsafe fn store(self, to: *mut f32) {
            unsafe { vst1q_f32(to, self) }
        }
        #[inline(never)]
        unsafe fn tile<const ROWS: usize>(tile: &Tile, out: &Out) {
            unsafe { tile.product::<Self, ROWS, 4>(out) }
        }
    }

    /// # Safety
    /// As [`product`] (every aarch64 CPU has NEON).
    pub(super) unsafe fn neon(p: &Product, a: &[f32], b: &[f32], c: *mut f32, s: &mut Vec<f32>) {
        unsafe { product::<float32x4_t>(p, a, b, c, s) }
    }
}
