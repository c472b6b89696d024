//! The f32 products of attention, between two computed tensors: the scores `q . K^T` and the weighted sum of the
//! values. In a decoder step they take one query row (five for a beam) against the whole cache, and tract's matrix
//! product packs the cache into its tile layout on every call before multiplying; this op reads both sides where
//! they lie, at any strides, so a step's product is a few thousand short dot products and nothing else. Over many
//! rows (the ViT's 50 patches) it runs `tiles`, register tiles of fused multiply-adds over one packed side.
//!
//! At a few rows, not tract's bits: tract's kernels sum in their tiles' order with fused multiply-adds where the
//! CPU has them. These sum in one fixed order with plain multiplications and additions, so they are the same on
//! every CPU, and were taken with their own golden check, like the softmax (ARCHITECTURE.md, the rewrite
//! invariant). Over many rows, tract's bits (`tiles`).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use crate::runtime::kernels::spin_pool;

mod tiles;

/// The most rows of a product taken as dot products; more go to `tiles`.
const FEW_ROWS: i64 = 16;

/// `c[.., i, j] = sum_t a[.., i, t] * b[.., t, j]` over shared batch axes, each tensor's axes in any order: the
/// positions of each axis in `a`, `b` and `c` say where it is (an `EinSum` such as `ambk,abnk->abmn`).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct AttentionMatMul {
    /// Each batch axis's position in `a`, `b` and `c`.
    batch: TVec<[usize; 3]>,
    /// The rows' axis in `a` and `c`.
    rows: [usize; 2],
    /// The columns' axis in `b` and `c`.
    columns: [usize; 2],
    /// The summed axis in `a` and `b`.
    summed: [usize; 2],
    /// Axes of one value outside that pattern (the ViT's weighted values have a batch axis that its inputs lack):
    /// their positions in `a`, `b` and `c` where they have one. Nothing is indexed along them.
    units: TVec<[Option<usize>; 3]>,
}

impl AttentionMatMul {
    /// The op for an einsum of two inputs given by their axis labels (`"ambk"`, `"abnk"`, `"abmn"`), when it is a
    /// batched matrix product: every label once per tensor, one summed, one row and one column axis, the others
    /// in all three, or of one value (`units`, the labels of the axes the graph knows to have one value).
    pub fn for_einsum(a: &str, b: &str, c: &str, units: &str) -> Option<AttentionMatMul> {
        let unique = |labels: &str| {
            labels
                .chars()
                .all(|l| labels.chars().filter(|&x| x == l).count() == 1)
        };
        if !(unique(a) && unique(b) && unique(c)) {
            return None;
        }
        let position = |labels: &str, label: char| labels.chars().position(|l| l == label);
        let mut labels: Vec<char> = a.chars().chain(b.chars()).chain(c.chars()).collect();
        labels.sort_unstable();
        labels.dedup();
        let (mut batch, mut rows, mut columns, mut summed) = (tvec![], vec![], vec![], vec![]);
        let mut unit_axes = tvec![];
        for label in labels {
            let positions = [position(a, label), position(b, label), position(c, label)];
            match positions {
                [Some(pa), Some(pb), Some(pc)] => batch.push([pa, pb, pc]),
                [Some(_), None, Some(_)] => rows.push((label, positions)),
                [None, Some(_), Some(_)] => columns.push((label, positions)),
                [Some(_), Some(_), None] => summed.push((label, positions)),
                _ if units.contains(label) => unit_axes.push(positions),
                _ => return None,
            }
        }
        // Batch axes in `c`'s order, so that items are numbered as `c` lays them out.
        batch.sort_unstable_by_key(|p| p[2]);
        // Where a role has several axes, those of one value are not indexed; one axis must be left.
        let one_axis = |axes: Vec<(char, [Option<usize>; 3])>| {
            let (ones, others): (Vec<_>, Vec<_>) = axes
                .into_iter()
                .partition(|(label, _)| units.contains(*label));
            match (&*ones, &*others) {
                ([(_, only)], []) | ([], [(_, only)]) => Some(*only),
                (_, [(_, only)]) => {
                    unit_axes.extend(ones.iter().map(|(_, positions)| *positions));
                    Some(*only)
                }
                _ => None,
            }
        };
        let [rows, columns, summed] = [rows, columns, summed].map(one_axis);
        let (Some(rows), Some(columns), Some(summed)) = (rows, columns, summed) else {
            return None;
        };
        let two = |positions: [Option<usize>; 3], [i, j]: [usize; 2]| {
            Some([positions[i]?, positions[j]?])
        };
        Some(AttentionMatMul {
            batch,
            rows: two(rows, [0, 2])?,
            columns: two(columns, [1, 2])?,
            summed: two(summed, [0, 1])?,
            units: unit_axes,
        })
    }

    /// The rank of `a`, `b` or `c` (`tensor` 0, 1 or 2).
    fn rank(&self, tensor: usize) -> usize {
        let units = self.units.iter().filter(|p| p[tensor].is_some()).count();
        self.batch.len() + 2 + units
    }

    /// Whether this op beats tract's product for an `a` of this shape: at a few rows (a decoder step's 1 to 5, a
    /// prefix's 10; any number the graph leaves symbolic is a decoder's), where packing the other side is most of
    /// tract's work; over more (the ViT's 50 patches) where the CPU fuses multiply-adds, for `tiles`, which pack
    /// one side where tract packs both, and give tract's bits. Without fused multiply-adds tract's product stays.
    pub fn pays_off_for(&self, a: &[TDim]) -> bool {
        a[self.rows[0]]
            .as_i64()
            .is_none_or(|rows| rows <= FEW_ROWS || tiles::kernel().is_some())
    }

    fn output_shape<D: DimLike>(&self, a: &[D], b: &[D]) -> TractResult<TVec<D>> {
        ensure!(
            a.len() == self.rank(0) && b.len() == self.rank(1),
            "inputs of rank {} and {}",
            a.len(),
            b.len()
        );
        let mut shape: TVec<D> = tvec![D::zero(); self.rank(2)];
        for [pa, pb, pc] in &self.units {
            let dims = [pa.map(|p| &a[p]), pb.map(|p| &b[p])];
            ensure!(
                dims.iter().flatten().all(|&d| *d == D::one()),
                "an axis of {dims:?} values where one was expected"
            );
            if let Some(pc) = pc {
                shape[*pc] = D::one();
            }
        }
        for &[pa, pb, pc] in &self.batch {
            ensure!(
                a[pa] == b[pb],
                "batch axes of {} and {} values",
                a[pa],
                b[pb]
            );
            shape[pc] = a[pa].clone();
        }
        ensure!(
            a[self.summed[0]] == b[self.summed[1]],
            "summing {} values against {}",
            a[self.summed[0]],
            b[self.summed[1]]
        );
        shape[self.rows[1]] = a[self.rows[0]].clone();
        shape[self.columns[1]] = b[self.columns[0]].clone();
        Ok(shape)
    }
}

impl Op for AttentionMatMul {
    fn name(&self) -> StaticName {
        "AttentionMatMul".into()
    }

    op_as_typed_op!();
}

impl EvalOp for AttentionMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        let shape = self.output_shape(a.shape(), b.shape())?;
        // SAFETY: `Product::run` writes every value (each batch item's rows and columns).
        let mut c = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        let strides =
            |t: &Tensor| -> TVec<usize> { t.strides().iter().map(|&s| s as usize).collect() };
        let (a_strides, b_strides, c_strides) = (strides(&a), strides(&b), strides(&c));
        let a_plain = a.try_as_plain_ram()?;
        let b_plain = b.try_as_plain_ram()?;
        let (a_values, b_values) = (a_plain.as_slice::<f32>()?, b_plain.as_slice::<f32>()?);
        let product = Product {
            rows: shape[self.rows[1]],
            columns: shape[self.columns[1]],
            depth: a.shape()[self.summed[0]],
            a: [a_strides[self.rows[0]], a_strides[self.summed[0]]],
            b: [b_strides[self.summed[1]], b_strides[self.columns[0]]],
            c: [c_strides[self.rows[1]], c_strides[self.columns[1]]],
        };
        let batch_dims: TVec<usize> = self.batch.iter().map(|p| shape[p[2]]).collect();
        let items = batch_dims.iter().product::<usize>();
        let mut c_plain = c.try_as_plain_ram_mut()?;
        let output = Output(c_plain.as_slice_mut::<f32>()?.as_mut_ptr());
        let run = |first: usize, last: usize| {
            let mut scratch = Vec::new();
            for item in first..last {
                let mut offsets = [0usize; 3];
                let mut rest = item;
                for (axis, &dim) in self.batch.iter().zip(&batch_dims).rev() {
                    let index = rest % dim;
                    rest /= dim;
                    offsets[0] += index * a_strides[axis[0]];
                    offsets[1] += index * b_strides[axis[1]];
                    offsets[2] += index * c_strides[axis[2]];
                }
                // SAFETY: batch items write disjoint values of `c` (they differ in a batch index), each inside it.
                unsafe {
                    product.run(
                        &a_values[offsets[0]..],
                        &b_values[offsets[1]..],
                        output.at(offsets[2]),
                        &mut scratch,
                    )
                };
            }
        };
        let macs = items * product.rows * product.columns * product.depth;
        spin_pool::split(spin_pool::threads_for(macs), items, &run);
        Ok(tvec!(c.into_tvalue()))
    }
}

impl TypedOp for AttentionMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2 && inputs.iter().all(|f| f.datum_type == f32::datum_type()));
        Ok(tvec!(f32::fact(
            self.output_shape(&inputs[0].shape, &inputs[1].shape)?
        )))
    }

    as_op!();
}

/// The output's first value; threads write disjoint values of it.
struct Output(*mut f32);
// SAFETY: the threads given the same `Output` write disjoint values (`AttentionMatMul::eval`).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

impl Output {
    /// # Safety
    /// `offset` must be inside the output.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's.
        unsafe { self.0.add(offset) }
    }
}

/// One batch item's product: its sizes, and the strides of `a`'s rows and summed axis, `b`'s summed axis and
/// columns, `c`'s rows and columns.
struct Product {
    rows: usize,
    columns: usize,
    depth: usize,
    a: [usize; 2],
    b: [usize; 2],
    c: [usize; 2],
}

/// Lanes of the dot products' partial sums: wide enough for the compiler to keep them in vector registers.
const LANES: usize = 16;

impl Product {
    /// # Safety
    /// `c` must be valid for writes at `i * self.c[0] + j * self.c[1]` for every row `i` and column `j`.
    unsafe fn run(&self, a: &[f32], b: &[f32], c: *mut f32, scratch: &mut Vec<f32>) {
        if self.rows > FEW_ROWS as usize
            && let Some(kernel) = tiles::kernel()
        {
            // SAFETY: the caller's.
            return unsafe { kernel(self, a, b, c, scratch) };
        }
        let Product {
            rows,
            columns,
            depth,
            ..
        } = *self;
        let [a_row, a_sum] = self.a;
        let [b_sum, b_column] = self.b;
        let [c_row, c_column] = self.c;
        if a_sum == 1 && b_sum == 1 {
            // Scores: a query row against each key, both contiguous along the summed axis.
            for i in 0..rows {
                let x = &a[i * a_row..][..depth];
                for j in 0..columns {
                    // SAFETY: row i, column j (the caller).
                    unsafe {
                        c.add(i * c_row + j * c_column)
                            .write(dot(x, &b[j * b_column..][..depth]))
                    };
                }
            }
        } else if b_column == 1 && c_column == 1 {
            // Weighted values: each row of the output is the sum of the value rows, each times its weight.
            for i in 0..rows {
                // SAFETY: row i's columns (the caller); nothing else refers to them while this runs.
                let out = unsafe { std::slice::from_raw_parts_mut(c.add(i * c_row), columns) };
                out.fill(0.0);
                for t in 0..depth {
                    let weight = a[i * a_row + t * a_sum];
                    for (o, &v) in out.iter_mut().zip(&b[t * b_sum..][..columns]) {
                        *o += weight * v;
                    }
                }
            }
        } else {
            for i in 0..rows {
                for j in 0..columns {
                    let sum = (0..depth).fold(0f32, |sum, t| {
                        sum + a[i * a_row + t * a_sum] * b[t * b_sum + j * b_column]
                    });
                    // SAFETY: row i, column j (the caller).
                    unsafe { c.add(i * c_row + j * c_column).write(sum) };
                }
            }
        }
    }
}

/// `x . y` in [`LANES`] partial sums, added pairwise (halves, then quarters..), then the tail: one order on every
/// CPU, and few dependent additions.
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut sums = [0f32; LANES];
    let (xs, ys) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .fold(0f32, |sum, (&p, &q)| sum + p * q);
    for (xc, yc) in xs.zip(ys) {
        for lane in 0..LANES {
            sums[lane] += xc[lane] * yc[lane];
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for lane in 0..width {
            sums[lane] += sums[lane + width];
        }
    }
    sums[0] + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::graph::tests::op_names;
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::tract_linalg::multithread::{Executor, multithread_tract_scope};

    #[test]
    fn batched_products_are_recognised_by_their_labels() {
        let op = AttentionMatMul::for_einsum("ambk", "abnk", "abmn", "").expect("scores");
        assert_eq!(op.batch.to_vec(), [[0, 0, 0], [2, 1, 1]]);
        assert_eq!((op.rows, op.columns, op.summed), ([1, 2], [2, 3], [3, 3]));
        let op = AttentionMatMul::for_einsum("abmk", "abkn", "ambn", "").expect("weighted values");
        assert_eq!(op.batch.to_vec(), [[0, 0, 0], [1, 1, 2]]);
        assert!(AttentionMatMul::for_einsum("mk", "kn", "mn", "").is_some());
        // The ViT's weighted values: an output axis of one value, in no input.
        let op = AttentionMatMul::for_einsum("bmk", "kbn", "ambn", "a").expect("a unit axis");
        assert_eq!(op.units.to_vec(), [[None, None, Some(0)]]);
        assert_eq!((op.rows, op.columns, op.summed), ([1, 1], [2, 3], [2, 0]));
        assert!(AttentionMatMul::for_einsum("bmk", "kbn", "ambn", "").is_none());
        // A decoder step's single query row is still the rows' axis; a second axis of one value beside it is not.
        let op = AttentionMatMul::for_einsum("xmk", "kn", "mn", "mx").expect("one row");
        assert_eq!(
            (op.rows, op.units.to_vec()),
            ([1, 0], vec![[Some(0), None, None]])
        );
        for (a, b, c, what) in [
            ("mkk", "kn", "mn", "a repeated label"),
            ("mkj", "kjn", "mn", "two summed axes"),
            ("mkx", "kn", "mn", "an axis of a alone"),
            ("mk", "kn", "mnx", "an axis of the output alone"),
            ("mk", "k", "m", "no columns"),
            ("bmk", "bkn", "bn", "a row axis summed away"),
        ] {
            assert!(
                AttentionMatMul::for_einsum(a, b, c, "").is_none(),
                "{what}: {a},{b}->{c}"
            );
        }
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn eval(op: &AttentionMatMul, a: &Tensor, b: &Tensor) -> TractResult<Tensor> {
        let output = op.eval(
            &EvalContext::out_of_plan(),
            tvec![a.clone().into_tvalue(), b.clone().into_tvalue()],
        )?;
        Ok(output[0].clone().into_tensor())
    }

    /// Each layout's product against one in f64, to the bound of a sum of `depth` rounded f32 products.
    #[test]
    fn every_layout_gives_the_product() -> TractResult<()> {
        let (batch, heads, rows, columns, depth) = (2, 3, 5, 37, 70);
        // a[.., i, t] and b[.., t, j] as functions of the indices, whatever the layout.
        let a_at =
            |n: usize, h: usize, i: usize, t: usize| values(1, ((n * 7 + h) * 11 + i) * 97 + t)[0];
        let b_at = |n: usize, h: usize, t: usize, j: usize| {
            values(1, ((n * 5 + h) * 13 + j) * 89 + t + 1)[0]
        };
        for (a_labels, b_labels, c_labels) in [
            ("ambk", "abnk", "abmn"),
            ("abmk", "abkn", "ambn"),
            ("abkm", "abnk", "abnm"),
        ] {
            let op = AttentionMatMul::for_einsum(a_labels, b_labels, c_labels, "").unwrap();
            // Labels: a = batch, b = heads, m = rows, n = columns, k = summed; the last layout takes neither fast path.
            let size = |l: char| match l {
                'a' => batch,
                'b' => heads,
                'm' => rows,
                'n' => columns,
                _ => depth,
            };
            let build = |labels: &str, at: &dyn Fn(&[usize]) -> f32| -> TractResult<Tensor> {
                let shape: Vec<usize> = labels.chars().map(size).collect();
                let mut data = Vec::new();
                for flat in 0..shape.iter().product::<usize>() {
                    let mut index = [0usize; 4];
                    let mut rest = flat;
                    for (position, &dim) in shape.iter().enumerate().rev() {
                        index[position] = rest % dim;
                        rest /= dim;
                    }
                    let of = |l: char| labels.find(l).map_or(0, |p| index[p]);
                    data.push(at(&[of('a'), of('b'), of('m'), of('n'), of('k')]));
                }
                Tensor::from_shape(&shape, &data)
            };
            let a = build(a_labels, &|i| a_at(i[0], i[1], i[2], i[4]))?;
            let b = build(b_labels, &|i| b_at(i[0], i[1], i[4], i[3]))?;
            let c = eval(&op, &a, &b)?;
            let expected_shape: Vec<usize> = c_labels.chars().map(size).collect();
            assert_eq!(
                c.shape(),
                expected_shape,
                "{a_labels},{b_labels}->{c_labels}"
            );
            let c_values = c.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
            let mut checked = 0;
            for (flat, &actual) in c_values.iter().enumerate() {
                let mut index = [0usize; 4];
                let mut rest = flat;
                for (position, &dim) in expected_shape.iter().enumerate().rev() {
                    index[position] = rest % dim;
                    rest /= dim;
                }
                let of = |l: char| index[c_labels.find(l).unwrap()];
                let (n, h, i, j) = (of('a'), of('b'), of('m'), of('n'));
                let terms: Vec<f64> = (0..depth)
                    .map(|t| f64::from(a_at(n, h, i, t)) * f64::from(b_at(n, h, t, j)))
                    .collect();
                let exact: f64 = terms.iter().sum();
                let bound = depth as f64
                    * f64::from(f32::EPSILON)
                    * terms.iter().map(|t| t.abs()).sum::<f64>();
                assert!(
                    (f64::from(actual) - exact).abs() <= bound,
                    "{a_labels},{b_labels}->{c_labels} at {index:?}: {actual} vs {exact}"
                );
                checked += 1;
            }
            assert_eq!(checked, batch * heads * rows * columns);
        }
        Ok(())
    }

    /// tract's own product of `a` and `b` as an einsum of these labels, through its optimised plan (its packing
    /// and its matrix kernel, `OptMatMul`).
    fn tracts_product(labels: [&str; 3], a: &Tensor, b: &Tensor) -> TractResult<Tensor> {
        let mut model = TypedModel::default();
        let a_source = model.add_source("a", f32::fact(a.shape()))?;
        let b_source = model.add_source("b", f32::fact(b.shape()))?;
        let axes = AxesMapping::from_strs(&labels[..2], &labels[2..])?;
        let product = model.wire_node(
            "product",
            EinSum::new(axes, f32::datum_type()),
            &[a_source, b_source],
        )?;
        model.select_output_outlets(&product)?;
        let optimised = model.into_optimized()?;
        ensure!(
            op_names(&optimised).iter().any(|name| name == "OptMatMul"),
            "tract's plan has no OptMatMul: {optimised}"
        );
        let output = optimised
            .into_runnable()?
            .run(tvec![a.clone().into_tvalue(), b.clone().into_tvalue()])?;
        Ok(output[0].clone().into_tensor())
    }

    /// Over many rows, on a CPU that fuses multiply-adds, the tiles sum each value as tract's kernels do: tract's
    /// own optimised product gives the same bits. Elsewhere such a product stays tract's.
    #[test]
    fn many_rows_give_tracts_bits() -> TractResult<()> {
        for (labels, a_shape, b_shape) in [
            // The ViT's scores and weighted values as its graph has them; then 37 columns (part of a panel) and
            // 21 rows (part of a tile).
            (
                ["mbk", "nbk", "bmn", ""],
                &[50, 12, 64][..],
                &[50, 12, 64][..],
            ),
            (["bmk", "kbn", "ambn", "a"], &[12, 50, 50], &[50, 12, 64]),
            (
                ["ambk", "anbk", "abmn", ""],
                &[2, 21, 3, 40],
                &[2, 37, 3, 40],
            ),
        ] {
            let [a_labels, b_labels, c_labels, units] = labels;
            let a = Tensor::from_shape(a_shape, &values(a_shape.iter().product(), 5))?;
            let b = Tensor::from_shape(b_shape, &values(b_shape.iter().product(), 6))?;
            let op = AttentionMatMul::for_einsum(a_labels, b_labels, c_labels, units).unwrap();
            let a_dims: TVec<TDim> = a_shape.iter().map(|&d| d.to_dim()).collect();
            if tiles::kernel().is_none() {
                assert!(!op.pays_off_for(&a_dims), "{labels:?}");
                continue;
            }
            assert!(op.pays_off_for(&a_dims), "{labels:?}");
            let expected = tracts_product([a_labels, b_labels, c_labels], &a, &b)?;
            assert_eq!(eval(&op, &a, &b)?, expected, "{labels:?}");
        }
        Ok(())
    }

    /// Each tiled kernel the CPU runs (x86-64's checked against /proc/cpuinfo, so that a broken detection cannot
    /// become a skip) gives tract's bits for the ViT's two products of one head.
    #[test]
    fn every_tile_kernel_gives_tracts_bits() -> TractResult<()> {
        let names: Vec<&str> = tiles::kernels().iter().map(|&(name, _)| name).collect();
        #[cfg(target_arch = "x86_64")]
        {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let flags: Vec<&str> = cpuinfo
                .lines()
                .find(|line| line.starts_with("flags"))
                .map(|line| line.split_whitespace().collect())
                .unwrap_or_default();
            let has = |flag: &str| flags.contains(&flag);
            assert_eq!(names.contains(&"avx512"), has("avx512f"), "{names:?}");
            assert_eq!(
                names.contains(&"avx2"),
                has("avx2") && has("fma"),
                "{names:?}"
            );
        }
        #[cfg(target_arch = "aarch64")]
        assert_eq!(names, ["neon"]);
        // Elsewhere (armv7) no fused multiply-add in the baseline: no tiles, tract's product stays.
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        assert!(names.is_empty(), "{names:?}");
        // Per head: scores (50 queries against 50 keys of 64) and weighted values (50 by 50 weights, 64 wide).
        let (tokens, width) = (50, 64);
        let queries = values(tokens * width, 7);
        let keys = values(tokens * width, 8);
        let weights = values(tokens * tokens, 9);
        let scores = Product {
            rows: tokens,
            columns: tokens,
            depth: width,
            a: [width, 1],
            b: [1, width],
            c: [tokens, 1],
        };
        let weighted = Product {
            rows: tokens,
            columns: width,
            depth: tokens,
            a: [tokens, 1],
            b: [width, 1],
            c: [width, 1],
        };
        let tracts = |labels: [&str; 3], a: &[f32], b: &[f32], shapes: [[usize; 2]; 2]| {
            let a = Tensor::from_shape(&shapes[0], a)?;
            let b = Tensor::from_shape(&shapes[1], b)?;
            let product = tracts_product(labels, &a, &b)?;
            product
                .try_as_plain_ram()?
                .as_slice::<f32>()
                .map(<[f32]>::to_vec)
        };
        let expected_scores = tracts(
            ["mk", "nk", "mn"],
            &queries,
            &keys,
            [[tokens, width], [tokens, width]],
        )?;
        let expected_weighted = tracts(
            ["mn", "nk", "mk"],
            &weights,
            &keys,
            [[tokens, tokens], [tokens, width]],
        )?;
        for &(name, kernel) in tiles::kernels() {
            for (product, a, b, expected) in [
                (&scores, &queries, &keys, &expected_scores),
                (&weighted, &weights, &keys, &expected_weighted),
            ] {
                let mut c = vec![f32::NAN; expected.len()];
                // SAFETY: the kernel runs on this CPU (`kernels`); `c` holds the product's values at its strides.
                unsafe { kernel(product, a, b, c.as_mut_ptr(), &mut Vec::new()) };
                let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&c), bits(expected), "{name}");
            }
        }
        Ok(())
    }

    #[test]
    fn threads_give_the_same_bits() -> TractResult<()> {
        // Enough multiply-adds to be split: 32 batch items of 5 rows, 100 columns, 70 deep.
        let op = AttentionMatMul::for_einsum("ambk", "abnk", "abmn", "").unwrap();
        let a = Tensor::from_shape(&[8, 5, 4, 70], &values(8 * 5 * 4 * 70, 1))?;
        let b = Tensor::from_shape(&[8, 4, 100, 70], &values(8 * 4 * 100 * 70, 2))?;
        const { assert!(8 * 4 * 5 * 100 * 70 >= spin_pool::PARALLEL_MIN_MACS) };
        let alone = eval(&op, &a, &b)?;
        let shared = multithread_tract_scope(Executor::multithread(2), || eval(&op, &a, &b))?;
        assert_eq!(alone, shared);
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let op = AttentionMatMul::for_einsum("bmk", "bkn", "bmn", "").unwrap();
        let a = Tensor::zero::<f32>(&[2, 3, 4]).unwrap();
        for b_shape in [[2, 5, 6], [3, 4, 6]] {
            let b = Tensor::zero::<f32>(&b_shape).unwrap();
            assert!(eval(&op, &a, &b).is_err(), "{b_shape:?}");
        }
    }
}
