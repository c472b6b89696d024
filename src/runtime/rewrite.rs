//! Rewrites of tract's typed graph that make our exported graphs run faster, each tested against what it replaces
//! (the softmax and the attention products at a few rows are within a few ulp and the same on every CPU, each taken
//! with its own golden check; ARCHITECTURE.md): `graph` applies them while it compiles a graph.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::TypedModelHelpers;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::{Add, Mul, PowConst, Tanh};
use tract_onnx::tract_core::ops::nn::gelu_approximate::gelu_approximate;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use crate::runtime::kernels::attention_matmul::AttentionMatMul;
use crate::runtime::kernels::dynamic_quantize::DynamicQuantizeU8;
use crate::runtime::kernels::int8_matmul::{Int8MatMul, Int8Weights, Kernel};
use crate::runtime::kernels::softmax::LastAxisSoftmax;

/// Replaces GPT-2's `gelu_new`, `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`, by tract's fused
/// `GeluApproximate`. tract has this rewrite, but its `Pow` declutter turns `x^3` into `PowConst` before trying
/// it, so it never fires; left alone, the eight element-wise ops (and `powf`) cost a quarter of a decoder step.
pub fn fuse_gelu_new(model: &mut TypedModel) -> TractResult<()> {
    let cubes: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<ElementWiseOp>()
                .and_then(|op| op.0.downcast_ref::<PowConst>())
                .is_some_and(|pow| pow.exponent == 3.0)
        })
        .map(|n| n.id)
        .collect();
    for cube in cubes {
        if let Some(patch) = gelu_new_patch(model, model.node(cube))? {
            patch.apply(model)?;
        }
    }
    model.compact()
}

/// The rewrite of one `gelu_new` found from its cube, or `None` when the cube's successors are anything else.
fn gelu_new_patch(model: &TypedModel, cube: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
    let x = cube.inputs[0];
    let is_bin =
        |node: &TypedNode, op: fn(&TypedBinOp) -> bool| node.op_as::<TypedBinOp>().is_some_and(op);
    let is_mul = |op: &TypedBinOp| op.0.is::<Mul>();
    let Some(scaled_cube) = model.find_succ_bin_with_const::<Mul>(cube, 0.044715) else {
        return Ok(None);
    };
    let Some(inner) = model.find_succ_bin_with_outlet::<Add>(scaled_cube, &x) else {
        return Ok(None);
    };
    let Some(scaled) =
        model.find_succ_bin_with_const::<Mul>(inner, (2.0 / std::f32::consts::PI).sqrt())
    else {
        return Ok(None);
    };
    let Some(tanh) = model.single_succ(scaled.id)? else {
        return Ok(None);
    };
    if !tanh
        .op_as::<ElementWiseOp>()
        .is_some_and(|op| op.0.is::<Tanh>())
    {
        return Ok(None);
    }
    let Some(one_plus) = model.find_succ_bin_with_const::<Add>(tanh, 1.0) else {
        return Ok(None);
    };
    let Some(product) = model.single_succ(one_plus.id)? else {
        return Ok(None);
    };
    if !is_bin(product, is_mul) {
        return Ok(None);
    }
    // Either `(0.5 * x) * (1 + tanh(..))`, as torch exports it, or `(x * (1 + tanh(..))) * 0.5`.
    let other = product
        .inputs
        .iter()
        .find(|i| i.node != one_plus.id)
        .copied();
    let output = if other == Some(x) {
        match model.find_succ_bin_with_const::<Mul>(product, 0.5) {
            Some(half) => half.id,
            None => return Ok(None),
        }
    } else {
        let Some(half_x) = other.map(|o| model.node(o.node)) else {
            return Ok(None);
        };
        if !is_bin(half_x, is_mul)
            || !half_x.inputs.contains(&x)
            || !model.matches_single_input_const(half_x, 0.5)
        {
            return Ok(None);
        }
        product.id
    };
    let mut patch = TypedModelPatch::default();
    let input = patch.tap_model(model, x)?;
    let gelu = patch.wire_node(
        format!("{}.gelu_new", cube.name),
        gelu_approximate(false),
        &[input],
    )?[0];
    patch.shunt_outside(model, output.into(), gelu)?;
    Ok(Some(patch))
}

/// Replaces each `MatMulInteger` of u8 activations by a constant i8 weight matrix (tract's quantized `EinSum`, before
/// tract optimises it) by [`Int8MatMul`] on the kernel this CPU runs best ([`Kernel::chosen`]), if any. Run it on
/// the decluttered graph: optimisation would turn the `EinSum` into tract's own kernel and zero-point sums.
pub fn int8_products_on_our_kernel(model: &mut TypedModel) -> TractResult<()> {
    match Kernel::chosen()? {
        Some(kernel) => int8_products_on(model, kernel),
        None => Ok(()),
    }
}

fn int8_products_on(model: &mut TypedModel, kernel: Kernel) -> TractResult<()> {
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<EinSum>())
        .map(|n| n.id)
        .collect();
    for id in candidates {
        let node = model.node(id);
        let Some(product) = int8_constant_product(model, node)? else {
            continue;
        };
        let weights = Int8Weights::pack(
            kernel,
            product.weights.try_as_plain_ram()?.as_slice::<i8>()?,
            product.k,
            product.n,
            product.zero_point,
        )?;
        let op = Int8MatMul::new(weights)
            .with_context(|| format!("{} was found, then not", kernel.name()))?;
        let mut patch = TypedModelPatch::default();
        let (op, inputs, replaced) = match cast_and_scale(model, node) {
            Some((scale, scaled)) => (
                op.scaled(),
                vec![node.inputs[0], node.inputs[3], scale],
                scaled,
            ),
            None => (op, vec![node.inputs[0], node.inputs[3]], id.into()),
        };
        let inputs = patch.taps(model, &inputs)?;
        let mut output = patch.wire_node(&node.name, op, &inputs)?[0];
        for (ix, &position) in product.dropped.iter().rev().enumerate() {
            output = patch.wire_node(
                format!("{}.rm_{ix}", node.name),
                AxisOp::Rm(position),
                &[output],
            )?[0];
        }
        patch.shunt_outside(model, replaced, output)?;
        patch.apply(model)?;
    }
    model.compact()
}

/// The `Cast` to f32 and the `Mul` by a one-element f32 (the activations' scale times the weights') that follow a
/// dynamically quantized product, when they are all its output feeds: the scale, and the `Mul`'s output.
fn cast_and_scale(model: &TypedModel, product: &TypedNode) -> Option<(OutletId, OutletId)> {
    use tract_onnx::tract_core::ops::cast::Cast;
    let [to_cast] = &*product.outputs[0].successors else {
        return None;
    };
    let cast = model.node(to_cast.node);
    if cast
        .op_as::<Cast>()
        .is_none_or(|c| c.to != f32::datum_type())
    {
        return None;
    }
    let [to_mul] = &*cast.outputs[0].successors else {
        return None;
    };
    let mul = model.node(to_mul.node);
    if !mul.op_as::<TypedBinOp>().is_some_and(|op| op.0.is::<Mul>()) {
        return None;
    }
    let scale = *mul.inputs.get(1 - to_mul.slot)?;
    let scale_fact = model.outlet_fact(scale).ok()?;
    let cast_fact = model.outlet_fact(cast.id.into()).ok()?;
    let mul_fact = model.outlet_fact(mul.id.into()).ok()?;
    (scale_fact.datum_type == f32::datum_type()
        && scale_fact.shape.volume() == 1.to_dim()
        && mul_fact.shape == cast_fact.shape
        && mul_fact.datum_type == f32::datum_type())
    .then_some((scale, mul.id.into()))
}

/// A quantized `EinSum` that is exactly `MatMulInteger(a, w, a_zero_point, w_zero_point)` with `a` u8 of shape
/// `[.., k]` and `w` a constant i8 `[k, n]` with a scalar zero point.
struct Int8Product {
    weights: Arc<Tensor>,
    k: usize,
    n: usize,
    zero_point: i8,
    /// Unit axes of `a` that the `EinSum`'s output does not have.
    dropped: Vec<usize>,
}

/// The [`Int8Product`] a node is, if it is one.
/// tract-onnx's translation gives it nine inputs: a, w, bias, a's zero point and scale, w's, the output's; the
/// ones not in `MatMulInteger` must be the constants it sets (0 and 1).
fn int8_constant_product(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Int8Product>> {
    let Some(op) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    let facts = model.node_input_facts(node.id)?;
    if facts.len() != 9 || op.operating_dt != i32::datum_type() {
        return Ok(None);
    }
    let scalar_const = |ix: usize| -> Option<Arc<Tensor>> {
        facts[ix]
            .konst
            .clone()
            .filter(|t| t.len() == 1 && !facts[ix].is_exotic())
    };
    let is_const = |ix: usize, value: f64| {
        scalar_const(ix).is_some_and(|t| t.cast_to_scalar::<f64>().is_ok_and(|v| v == value))
    };
    if ![(2, 0.0), (4, 1.0), (6, 1.0), (7, 0.0), (8, 1.0)]
        .iter()
        .all(|&(ix, value)| is_const(ix, value))
    {
        return Ok(None);
    }
    let (activations, weights, a_zero_point) = (facts[0], facts[1], facts[3]);
    // An i8 zero point, or the i32 0 tract-onnx puts where the ONNX node has none.
    let Some(weight_zero_point) = scalar_const(5)
        .and_then(|t| t.cast_to_scalar::<i32>().ok())
        .and_then(|z| i8::try_from(z).ok())
    else {
        return Ok(None);
    };
    let Some(weight_values) = weights.konst.clone() else {
        return Ok(None);
    };
    if activations.datum_type != u8::datum_type()
        || a_zero_point.datum_type != u8::datum_type()
        || a_zero_point.shape.volume() != 1.to_dim()
        || weights.datum_type != i8::datum_type()
        || weights.is_exotic()
        || weights.rank() != 2
    {
        return Ok(None);
    }
    // The product must be `..k, kn -> ..n`: a's last axis summed against w's first, w's second kept last. tract's
    // declutter may have dropped unit axes of a from the output (a reshape it absorbed): those are removed after.
    let (inputs, outputs) = op.axes.extract_sub_mapping(&[0, 1], &[0])?.to_strs();
    let (a, w, c) = (&inputs[0], &inputs[1], &outputs[0]);
    let (Some(k_axis), Some(n_axis)) = (w.chars().next(), w.chars().nth(1)) else {
        return Ok(None);
    };
    let Some(batch) = a.strip_suffix(k_axis) else {
        return Ok(None);
    };
    let kept: String = batch.chars().filter(|axis| c.contains(*axis)).collect();
    let dropped: Vec<usize> = batch
        .chars()
        .enumerate()
        .filter(|(_, axis)| !c.contains(*axis))
        .map(|(position, _)| position)
        .collect();
    if *c != format!("{kept}{n_axis}")
        || batch.contains(n_axis)
        || dropped
            .iter()
            .any(|&position| !activations.shape[position].is_one())
    {
        return Ok(None);
    }
    Ok(Some(Int8Product {
        k: weight_values.shape()[0],
        n: weight_values.shape()[1],
        zero_point: weight_zero_point,
        weights: weight_values,
        dropped,
    }))
}

/// Replaces tract-onnx's `DynamicQuantizeLinearU8`, which runs before every int8 matrix product, by
/// [`DynamicQuantizeU8`]. Same outputs bit for bit, a tenth of the time: tract's folds the range over a dynamic-rank
/// array view and rounds through a libm call per element, half of the int8 ViT encoder's time.
pub fn fast_dynamic_quantization(model: &mut TypedModel) -> TractResult<()> {
    let targets: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op.name() == "DynamicQuantizeLinearU8")
        .map(|n| n.id)
        .collect();
    for id in targets {
        let node = model.node(id);
        let input = model.outlet_fact(node.inputs[0])?;
        // Checked rather than assumed: the op is matched by name, so make sure it is the one we replace.
        let facts = DynamicQuantizeU8.output_facts(&[input])?;
        let same = node.outputs.len() == facts.len()
            && node
                .outputs
                .iter()
                .zip(&facts)
                .all(|(o, f)| o.fact.datum_type == f.datum_type && o.fact.shape == f.shape);
        if input.datum_type != f32::datum_type() || !same {
            continue;
        }
        let patch =
            TypedModelPatch::replace_single_op(model, node, &node.inputs, DynamicQuantizeU8)?;
        patch.apply(model)?;
    }
    Ok(())
}

/// Replaces tract's `Softmax` over the last axis of an f32 tensor, attention's, by [`LastAxisSoftmax`].
pub fn fast_softmax(model: &mut TypedModel) -> TractResult<()> {
    let targets: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<Softmax>().is_some_and(|op| {
                let fact = &n.outputs[0].fact;
                op.kind == SoftmaxKind::Softmax
                    && op.quant_output_dt.is_none()
                    && fact.datum_type == f32::datum_type()
                    && *op.axes == [fact.rank() - 1]
            })
        })
        .map(|n| n.id)
        .collect();
    for id in targets {
        let node = model.node(id);
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, LastAxisSoftmax)?;
        patch.apply(model)?;
    }
    Ok(())
}

/// Replaces each f32 `EinSum` between two computed tensors that is a batched matrix product (attention's scores and
/// weighted values) by [`AttentionMatMul`] where it pays off: at a few rows (a decoder step) it reads both sides
/// where they lie instead of packing one on every call, over many (the ViT's) it packs one side where tract packs
/// both. Axes of one value beside the product's are allowed. Run it on the decluttered graph, before tract turns
/// the `EinSum` into its packing and its kernel.
pub fn attention_products_on_our_op(model: &mut TypedModel) -> TractResult<()> {
    let targets: Vec<(usize, AttentionMatMul)> = model
        .nodes()
        .iter()
        .filter_map(|node| {
            let op = node.op_as::<EinSum>()?;
            let facts = model.node_input_facts(node.id).ok()?;
            let computed_f32 = |f: &&TypedFact| {
                f.datum_type == f32::datum_type() && f.konst.is_none() && !f.is_exotic()
            };
            if op.q_params.is_some()
                || op.operating_dt != f32::datum_type()
                || facts.len() != 2
                || !facts.iter().all(computed_f32)
            {
                return None;
            }
            let (inputs, outputs) = op.axes.to_strs();
            let units: String = inputs
                .iter()
                .zip(&facts)
                .chain([(&outputs[0], &&node.outputs[0].fact)])
                .flat_map(|(labels, fact)| labels.chars().zip(fact.shape.iter()))
                .filter(|(_, dim)| dim.is_one())
                .map(|(label, _)| label)
                .collect();
            AttentionMatMul::for_einsum(&inputs[0], &inputs[1], &outputs[0], &units)
                .filter(|replacement| replacement.pays_off_for(&facts[0].shape))
                .map(|replacement| (node.id, replacement))
        })
        .collect();
    for (id, op) in targets {
        let node = model.node(id);
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::graph::tests::op_names;
    use tract_onnx::tract_core::ops::cast::cast;
    use tract_onnx::tract_core::ops::math::{add, mul, pow_const, tanh};

    /// `gelu_new` as torch exports it, over a [2, 5] input.
    fn gelu_new_graph() -> TractResult<TypedModel> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 5]))?;
        let scalar = |model: &mut TypedModel, name: &str, value: f32| {
            model.add_const(name, tensor2(&[[value]]))
        };
        let half = scalar(&mut model, "half", 0.5)?;
        let coefficient = scalar(&mut model, "coefficient", 0.044715)?;
        let sqrt_2_over_pi = scalar(
            &mut model,
            "sqrt_2_over_pi",
            (2.0 / std::f32::consts::PI).sqrt(),
        )?;
        let one = scalar(&mut model, "one", 1.0)?;
        let half_x = model.wire_node("half_x", mul(), &[x, half])?[0];
        let cube = model.wire_node("cube", pow_const(3.0), &[x])?[0];
        let scaled_cube = model.wire_node("scaled_cube", mul(), &[cube, coefficient])?[0];
        let inner = model.wire_node("inner", add(), &[x, scaled_cube])?[0];
        let scaled = model.wire_node("scaled", mul(), &[inner, sqrt_2_over_pi])?[0];
        let tanh = model.wire_node("tanh", tanh(), &[scaled])?[0];
        let one_plus = model.wire_node("one_plus", add(), &[tanh, one])?[0];
        let out = model.wire_node("out", mul(), &[half_x, one_plus])?[0];
        model.select_output_outlets(&[out])?;
        Ok(model)
    }

    #[test]
    fn gelu_new_is_fused_into_one_op_with_the_same_values() -> TractResult<()> {
        let model = gelu_new_graph()?;
        let mut fused = model.clone();
        fuse_gelu_new(&mut fused)?;
        assert_eq!(op_names(&fused), ["Source", "GeluApproximate"], "{fused}");

        let input = tensor2(&[[-6.0f32, -1.5, -0.3, 0.0, 0.2], [0.7, 1.0, 2.5, 4.0, 9.0]]);
        let run = |model: TypedModel| -> TractResult<Vec<f32>> {
            let output = model
                .into_runnable()?
                .run(tvec![input.clone().into_tvalue()])?;
            Ok(output[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        for (expected, actual) in run(model)?.iter().zip(run(fused)?) {
            assert!(
                (expected - actual).abs() <= 1e-6 * expected.abs().max(1.0),
                "{expected} vs {actual}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_cube_that_is_not_gelu_is_left_alone() -> TractResult<()> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([3]))?;
        let cube = model.wire_node("cube", pow_const(3.0), &[x])?[0];
        model.select_output_outlets(&[cube])?;
        fuse_gelu_new(&mut model)?;
        assert_eq!(model.nodes().len(), 2);
        assert!(
            model
                .node(1)
                .op_as::<ElementWiseOp>()
                .is_some_and(|op| op.0.is::<PowConst>())
        );
        Ok(())
    }

    /// `MatMulInteger` as tract-onnx translates it: a nine-input quantized `EinSum` of u8 activations `[2, 1, 3, k]`
    /// (a unit axis the output drops, as tract's declutter leaves GPT-2's projections) by a constant i8 `[k, n]`;
    /// `scaled`: followed by the cast to f32 and the multiplication by a one-element scale, a third input.
    fn matmul_integer_graph(
        k: usize,
        n: usize,
        weight_zero_point: Tensor,
        scaled: bool,
    ) -> TractResult<TypedModel> {
        let mut model = TypedModel::default();
        let a = model.add_source("a", u8::fact([2, 1, 3, k]))?;
        let a0 = model.add_source("a0", u8::fact([0usize; 0]))?;
        let weights: Vec<i8> = (0..k * n).map(|i| (i * 37 % 256) as u8 as i8).collect();
        let w = model.add_const("w", Tensor::from_shape(&[k, n], &weights)?)?;
        let mut inputs = vec![a, w, model.add_const("bias", tensor0(0i32))?, a0];
        inputs.push(model.add_const("a_scale", tensor0(1f32))?);
        inputs.push(model.add_const("w0", weight_zero_point)?);
        inputs.push(model.add_const("w_scale", tensor0(1f32))?);
        inputs.push(model.add_const("c0", tensor0(0i32))?);
        inputs.push(model.add_const("c_scale", tensor0(1f32))?);
        let axes = AxesMapping::from_strs(&["bxmk", "kn", "", "", "", "", "", "", ""], &["bmn"])?;
        let einsum = EinSum::newq(axes, i32::datum_type(), i32::datum_type());
        let mut output = model.wire_node("product", einsum, &inputs)?;
        if scaled {
            let scale = model.add_source("scale", f32::fact([1, 1, 1]))?;
            let cast = model.wire_node("cast", cast(f32::datum_type()), &output)?[0];
            output = model.wire_node("scaled", mul(), &[cast, scale])?;
        }
        model.select_output_outlets(&output)?;
        Ok(model)
    }

    #[test]
    fn int8_products_give_tracts_numbers_on_our_kernel() -> TractResult<()> {
        let (k, n) = (70, 90);
        let activations: Vec<u8> = (0..6 * k).map(|i| (i * 101 % 256) as u8).collect();
        for (weight_zero_point, scaled) in [
            (tensor0(-3i8), false),
            (tensor0(0i32), false),
            (tensor0(5i8), true),
        ] {
            let mut inputs = tvec![
                Tensor::from_shape(&[2, 1, 3, k], &activations)?.into_tvalue(),
                tensor0(77u8).into_tvalue()
            ];
            if scaled {
                inputs.push(tensor3(&[[[0.0137f32]]]).into_tvalue());
            }
            let tracts = matmul_integer_graph(k, n, weight_zero_point.clone(), scaled)?;
            let run = |model: TypedModel| -> TractResult<Tensor> {
                let output = model
                    .into_optimized()?
                    .into_runnable()?
                    .run(inputs.clone())?;
                Ok(output[0].clone().into_tensor())
            };
            let expected = run(tracts.clone())?;
            for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
                let mut ours = tracts.clone();
                int8_products_on(&mut ours, kernel)?;
                let ops = op_names(&ours);
                let count = |name: &str| ops.iter().filter(|op| *op == name).count();
                assert_eq!(count("Int8MatMul"), 1, "{ops:?}");
                // Scaled, the cast and the multiplication are the op's own.
                assert_eq!(count("Cast"), 0, "{ops:?}");
                let ours = run(ours)?;
                assert_eq!(ours.shape(), [2, 3, n]);
                assert_eq!(
                    expected,
                    ours,
                    "{}: zero point {weight_zero_point:?}, scaled {scaled}",
                    kernel.name()
                );
            }
        }
        Ok(())
    }

    #[test]
    fn only_a_softmax_over_the_last_axis_is_replaced() -> TractResult<()> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([3, 50]))?;
        let softmax = |axis: usize| Softmax::new(tvec![axis], None, SoftmaxKind::Softmax);
        let last = model.wire_node("last", softmax(1), &[x])?[0];
        let first = model.wire_node("first", softmax(0), &[x])?[0];
        let log = Softmax::new(tvec![1], None, SoftmaxKind::LogSoftmax);
        let log = model.wire_node("log", log, &[x])?[0];
        model.select_output_outlets(&[last, first, log])?;
        let input: Vec<f32> = (0..150).map(|i| (i * 37 % 101) as f32 * 0.1).collect();
        let inputs = tvec![Tensor::from_shape(&[3, 50], &input)?.into_tvalue()];
        let expected = model.clone().into_runnable()?.run(inputs.clone())?;

        let mut ours = model;
        fast_softmax(&mut ours)?;
        let op_of = |name: &str| {
            let node = ours
                .node_by_name(name)
                .expect("the rewrite keeps the node names");
            node.op.name().to_string()
        };
        assert_eq!(
            ["last", "first", "log"].map(op_of),
            ["LastAxisSoftmax", "Softmax", "LogSoftmax"],
            "{ours}"
        );
        let outputs = ours.into_runnable()?.run(inputs)?;
        assert_eq!(outputs[1], expected[1]);
        assert_eq!(outputs[2], expected[2]);
        let (ours, tracts) = (
            outputs[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            expected[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        );
        for (a, b) in ours.iter().zip(&tracts) {
            assert!((a - b).abs() <= 4.0 * f32::EPSILON * b.abs(), "{a} vs {b}");
        }
        Ok(())
    }

    /// Scores of a few query rows (a decoder's symbolic sequence) against computed keys are ours, and over 50 rows
    /// where the CPU fuses multiply-adds (the tiles give tract's optimised bits, kernels::attention_matmul's tests);
    /// by a constant, the product stays tract's, with tract's numbers.
    #[test]
    fn attention_products_between_computed_tensors_are_replaced() -> TractResult<()> {
        let mut model = TypedModel::default();
        let seq = model.symbols.sym("S").to_dim();
        let q = model.add_source("q", f32::fact([2.to_dim(), seq, 3.to_dim(), 16.to_dim()]))?;
        let keys = model.add_source("keys", f32::fact([2, 3, 7, 16]))?;
        let many = model.add_source("many", f32::fact([2, 50, 3, 16]))?;
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let weights = Tensor::from_shape(&[2, 3, 7, 16], &values(672, 3))?;
        let weights = model.add_const("weights", weights)?;
        let scores = || -> TractResult<EinSum> {
            let axes = AxesMapping::from_strs(&["ambk", "abnk"], &["abmn"])?;
            Ok(EinSum::new(axes, f32::datum_type()))
        };
        let few = model.wire_node("few", scores()?, &[q, keys])?[0];
        let over_many = model.wire_node("over_many", scores()?, &[many, keys])?[0];
        let by_constant = model.wire_node("by_constant", scores()?, &[q, weights])?[0];
        model.select_output_outlets(&[few, over_many, by_constant])?;
        let inputs = tvec![
            Tensor::from_shape(&[2, 4, 3, 16], &values(384, 1))?.into_tvalue(),
            Tensor::from_shape(&[2, 3, 7, 16], &values(672, 2))?.into_tvalue(),
            Tensor::from_shape(&[2, 50, 3, 16], &values(4800, 4))?.into_tvalue(),
        ];
        let expected = model.clone().into_runnable()?.run(inputs.clone())?;

        let mut ours = model;
        attention_products_on_our_op(&mut ours)?;
        let many_rows_on_ours = AttentionMatMul::for_einsum("ambk", "abnk", "abmn", "")
            .is_some_and(|op| op.pays_off_for(&[2.to_dim(), 50.to_dim(), 3.to_dim(), 16.to_dim()]));
        let op_of = |name: &str| ours.node_by_name(name).map(|n| n.op.name().to_string());
        assert_eq!(
            ["few", "over_many", "by_constant"].map(|name| op_of(name).ok()),
            [
                Some("AttentionMatMul".into()),
                Some(
                    if many_rows_on_ours {
                        "AttentionMatMul"
                    } else {
                        "EinSum"
                    }
                    .into()
                ),
                Some("EinSum".into())
            ],
            "{ours}"
        );
        let outputs = ours.into_runnable()?.run(inputs)?;
        assert_eq!(outputs[2], expected[2]);
        assert_eq!(outputs[0].shape(), [2, 3, 4, 7]);
        assert_eq!(outputs[1].shape(), [2, 3, 50, 7]);
        for (output, expected) in outputs.iter().zip(&expected).take(2) {
            let (ours, reference) = (
                output.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
                expected.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            );
            for (a, b) in ours.iter().zip(&reference) {
                // Sums of 16 products of values in [-1, 1], in different orders.
                assert!((a - b).abs() <= 16.0 * 16.0 * f32::EPSILON, "{a} vs {b}");
            }
        }
        Ok(())
    }
}
