//! ONNX bytes -> an optimised tract plan: parse, fix the input facts, optimise once, fold constants.

use std::path::Path;

use anyhow::{Context, Result, anyhow, ensure};
use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::nn::Reduce;
use tract_onnx::tract_core::tract_data::knobs::KnobScope;
use tract_onnx::tract_hir::infer::GenericFactoid;

use crate::runtime::rewrite;

pub type Plan = Arc<TypedRunnableModel>;

/// Parses an ONNX graph. The file's output shapes and intermediate value info are ignored: exporters write
/// symbolic dims there (`past + seq`, fresh `unk__` names) that clash with the facts we declare, and tract
/// infers them anyway. Takes the file's bytes so that they are freed once parsed, before optimisation makes its
/// own transient copies of the weights: the peak memory of loading is the daemon's peak (BENCHMARKS.md).
pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<InferenceModel> {
    let invalid =
        |e: &dyn std::fmt::Display| anyhow!("{}: not a valid ONNX graph: {e:#}", path.display());
    // Decoding copies every weight out of the file's bytes, and translating copies them again into tensors: free
    // the bytes in between, so that at most two copies are alive (tract's `model_for_read` keeps three).
    let proto = ModelProto::decode(bytes.as_slice()).map_err(|e| invalid(&e))?;
    drop(bytes);
    tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
        .model_for_proto_model(&proto)
        .map_err(|e| invalid(&e))
}

/// Reorders the graph's inputs and outputs to the given names, so callers can address them by position.
/// Inputs must match exactly; outputs not named are dropped (and their computation with them).
pub fn select_io(
    model: &mut InferenceModel,
    path: &Path,
    inputs: &[&str],
    outputs: &[&str],
) -> Result<()> {
    let input_names: Vec<String> = model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let unexpected: Vec<&str> = input_names
        .iter()
        .map(String::as_str)
        .filter(|n| !inputs.contains(n))
        .collect();
    ensure!(
        unexpected.is_empty(),
        "{}: unexpected graph inputs: {}",
        path.display(),
        unexpected.join(", ")
    );
    let by_name = |name: &str| -> Result<OutletId> {
        let ix = input_names
            .iter()
            .position(|n| n == name)
            .with_context(|| {
                format!(
                    "{}: graph has no input `{name}` (inputs: {})",
                    path.display(),
                    input_names.join(", ")
                )
            })?;
        Ok(model.input_outlets()?[ix])
    };
    let new_inputs = inputs
        .iter()
        .map(|n| by_name(n))
        .collect::<Result<Vec<_>>>()?;

    let present: Vec<(String, OutletId)> = model
        .output_outlets()?
        .iter()
        .map(|&o| {
            (
                model
                    .outlet_label(o)
                    .unwrap_or(&model.node(o.node).name)
                    .to_string(),
                o,
            )
        })
        .collect();
    let new_outputs = outputs
        .iter()
        .map(|name| {
            present
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, o)| *o)
                .with_context(|| {
                    let names: Vec<&str> = present.iter().map(|(n, _)| n.as_str()).collect();
                    format!(
                        "{}: graph has no output `{name}` (outputs: {})",
                        path.display(),
                        names.join(", ")
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    model.set_input_outlets(&new_inputs)?;
    model.select_output_outlets(&new_outputs)?;
    Ok(())
}

/// The symbol the file itself uses for an input axis, or a fresh one named `fallback` when the file gives a
/// number or nothing. Reusing the file's own symbols keeps any shape expressions inside the graph consistent.
pub fn axis_symbol(
    model: &InferenceModel,
    input: usize,
    axis: usize,
    fallback: &str,
) -> Result<TDim> {
    let declared = model.input_fact(input)?.shape.dim(axis);
    Ok(match declared {
        Some(GenericFactoid::Only(d @ TDim::Sym(_))) => d,
        _ => TDim::Sym(model.symbols.new_with_prefix(fallback)),
    })
}

/// Optimises the graph for the declared input facts and makes it runnable.
pub fn compile(model: InferenceModel, path: &Path) -> Result<Plan> {
    let prepare = || -> TractResult<Plan> {
        let mut model = model.into_typed()?.into_decluttered()?;
        rewrite::fuse_gelu_new(&mut model)?;
        rewrite::int8_products_on_our_kernel(&mut model)?;
        rewrite::attention_products_on_our_op(&mut model)?;
        let mut model = model.into_optimized()?;
        rewrite::fast_dynamic_quantization(&mut model)?;
        rewrite::fast_softmax(&mut model)?;
        fold_constants(&mut model)?;
        release_freed_memory();
        model.into_runnable()
    };
    let never_lazy = usize::MAX.to_string();
    KnobScope::new([(LAZY_IM2COL_MIN_KERNEL, never_lazy.as_str())])
        .and_then(|knobs| knobs.enter(prepare))
        .map_err(|e| {
            anyhow!(
                "{}: cannot prepare the graph for this runtime: {e:#}",
                path.display()
            )
        })
}

/// tract's knob that sends every convolution of 6 taps or more through its "lazy" im2col, which gathers the input
/// again for each panel of output channels. For the ViT's patch embedding (32x32 taps, 768 channels) that took
/// twice as long as building the im2col once, 600 KB (BENCHMARKS.md), with the same numbers. Set out of reach for
/// our graphs; tract's other rule still takes an im2col of over 4 MB the lazy way.
const LAZY_IM2COL_MIN_KERNEL: &str = "TRACT_LAZY_IM2COL_MIN_KERNEL";

/// Hands the heap's free pages back to the system. Loading a graph frees about twice its weights (the file's bytes,
/// the decoded protobuf, optimisation's transients) in pieces that glibc keeps resident; returned after each graph,
/// they no longer add to the next graph's loading peak, nor stay in the daemon's footprint (BENCHMARKS.md, "Memory").
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs a plan node by node, clearing the upper halves of the vector registers after each node on x86-64.
/// tract-linalg's AVX/AVX-512 kernels return with them dirty, and until they are cleared every SSE instruction
/// of the Rust code that follows (ours and tract's own ops, built for the x86-64 baseline) pays a false
/// dependency on them: measured, our int8 quantization ran 3.4 times slower after a matrix product.
pub fn run(plan: &Plan, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
    let mut state = TypedSimpleState::new(plan)?;
    state.run_plan_with_eval(inputs, |context, op_state, node, node_inputs| {
        let outputs = tract_onnx::tract_core::plan::eval(context, op_state, node, node_inputs);
        clear_upper_vector_state();
        outputs
    })
}

#[cfg(target_arch = "x86_64")]
fn clear_upper_vector_state() {
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX, checked just above; VZEROUPPER only zeroes bits no live value is in.
        unsafe { std::arch::x86_64::_mm256_zeroupper() };
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn clear_upper_vector_state() {}

/// tract's constant propagation declines to fold a subgraph whose output is both larger than its inputs and over
/// 4 MiB. For a dynamic-int8 graph that is every weight: the cast, zero-point sums and packing feeding
/// MatMulInteger would run again on every call, making int8 some 30 times slower than fp32. Memory is not the
/// concern here that it is for tract in general, since the folded weights replace their sources, so fold
/// everything that can be.
fn fold_constants(model: &mut TypedModel) -> TractResult<()> {
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.inputs.is_empty() || node.op_is::<Const>() {
            continue;
        }
        if widened_constant_for_a_sum(model, node).is_some() {
            continue; // folded with the sum that follows it
        }
        // An op that cannot run outside a plan, or fails to, is simply left to run in it; so is a sum of a widened
        // constant that cannot be taken in slices.
        let folded = match sum_of_widened_constant(model, node) {
            Ok(Some(sum)) => Some(tvec![sum.into_tvalue()]),
            Ok(None) => evaluate_on_constants(model, node)?,
            Err(_) => None,
        };
        let Some(outputs) = folded else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        for (ix, value) in outputs.into_iter().enumerate() {
            let outlet = OutletId::new(id, ix);
            // Packed weights are "exotic" tensors: the fact describing their layout must travel with them.
            let exotic = model.outlet_fact(outlet)?.exotic_fact.clone();
            let konst = Const::new_with_opt_exotic_fact(value.into_arc_tensor(), exotic)?;
            let wire = patch.wire_node(format!("{}.folded.{ix}", node.name), konst, &[])?[0];
            patch.shunt_outside(model, outlet, wire)?;
        }
        patch.apply(model)?;
    }
    model.compact()
}

/// The outputs of a node whose inputs are all constants, or `None` when they are not or it cannot run outside a plan.
fn evaluate_on_constants(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<TVec<TValue>>> {
    let Some(inputs) = model
        .node_input_facts(node.id)?
        .iter()
        .map(|f| f.konst.clone().map(|k| k.into_tvalue()))
        .collect::<Option<TVec<TValue>>>()
    else {
        return Ok(None);
    };
    Ok(node.op.eval_out_of_plan(inputs).ok().flatten())
}

/// Widening casts of a constant bigger than this, feeding a sum, are folded slice by slice.
const WIDENED_SLICE_BYTES: usize = 4 << 20;

/// `node` is a cast of a constant to a wider type whose only consumer is a sum over some of its axes: tract's
/// zero-point correction of an int8 product, `Reduce<Sum>(Cast<i32>(weight))`. Folded whole, the cast holds the
/// weight at four times its size (GPT-2's vocabulary projection: 154 MB, the peak of loading a bundle); returns
/// the constant, the axis along which the sum can be taken slice by slice instead, and the widened size in bytes.
fn widened_constant_for_a_sum(
    model: &TypedModel,
    node: &TypedNode,
) -> Option<(Arc<Tensor>, usize, usize)> {
    let cast = node.op_as::<Cast>()?;
    let weight = model.outlet_fact(node.inputs[0]).ok()?.konst.clone()?;
    let widened_bytes = weight.len() * cast.to.size_of();
    let [successor] = &*node.outputs[0].successors else {
        return None;
    };
    let sum = model.node(successor.node).op_as::<Reduce>()?;
    let axis = (0..weight.rank()).find(|axis| !sum.axes.contains(axis))?;
    (widened_bytes > WIDENED_SLICE_BYTES
        && widened_bytes > weight.len() * weight.datum_type().size_of())
    .then_some((weight, axis, widened_bytes))
}

/// The value of a sum over a widened constant (see [`widened_constant_for_a_sum`]), computed slice by slice.
fn sum_of_widened_constant(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Tensor>> {
    if !node.op_is::<Reduce>() {
        return Ok(None);
    }
    let cast_node = model.node(node.inputs[0].node);
    let Some((weight, axis, widened_bytes)) = widened_constant_for_a_sum(model, cast_node) else {
        return Ok(None);
    };
    let rows = (WIDENED_SLICE_BYTES / (widened_bytes / weight.shape()[axis])).max(1);
    let mut sums = Vec::new();
    for start in (0..weight.shape()[axis]).step_by(rows) {
        let end = (start + rows).min(weight.shape()[axis]);
        let slice = weight.slice(axis, start, end)?.into_tvalue();
        let widened = cast_node
            .op
            .eval_out_of_plan(tvec![slice])?
            .context("cast did not evaluate")?;
        let sum = node
            .op
            .eval_out_of_plan(widened)?
            .context("sum did not evaluate")?;
        sums.push(
            sum.into_iter()
                .next()
                .context("sum has no output")?
                .into_tensor(),
        );
    }
    Ok(Some(Tensor::stack_tensors(axis, &sums)?))
}

/// A graph with one input and one output, both of fixed shape: the encoder and the mapper.
pub struct FixedGraph {
    plan: Plan,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
}

impl FixedGraph {
    pub fn load(
        path: &Path,
        bytes: Vec<u8>,
        (input, input_shape): (&str, &[usize]),
        (output, output_shape): (&str, &[usize]),
    ) -> Result<FixedGraph> {
        let mut model = parse(path, bytes)?;
        select_io(&mut model, path, &[input], &[output])?;
        model.set_input_fact(0, f32::fact(input_shape).into())?;
        let plan = compile(model, path)?;
        let fact = plan.model().output_fact(0)?;
        ensure!(
            fact.datum_type == f32::datum_type() && fact.shape.as_concrete() == Some(output_shape),
            "{}: output `{output}` is {fact:?}, expected f32 {output_shape:?} from the manifest",
            path.display()
        );
        Ok(FixedGraph {
            plan,
            input_shape: input_shape.to_vec(),
            output_shape: output_shape.to_vec(),
        })
    }

    pub fn run(&self, input: Vec<f32>) -> Result<Vec<f32>> {
        let tensor = Tensor::from_shape(&self.input_shape, &input)?;
        let output = run(&self.plan, tvec![tensor.into_tvalue()])?;
        let output = output.first().context("graph returned no output")?;
        ensure!(
            output.shape() == self.output_shape.as_slice(),
            "graph returned shape {:?}",
            output.shape()
        );
        Ok(output.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::Reducer;

    /// The names of a graph's ops, in order.
    pub(crate) fn op_names(model: &TypedModel) -> Vec<String> {
        model
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect()
    }

    /// Checks that every `MatMulInteger` of an ONNX file runs as our `Int8MatMul` in its compiled plan where one of
    /// our kernels runs on this CPU (tract may split one into several, as it does GPT-2's fused q/k/v projection,
    /// but leaves no integer product to its own kernels), and none elsewhere.
    pub(crate) fn assert_int8_products_on_our_kernel(onnx: &Path, plan: &Plan) {
        let proto = ModelProto::decode(std::fs::read(onnx).unwrap().as_slice()).unwrap();
        let products = proto
            .graph
            .iter()
            .flat_map(|g| &g.node)
            .filter(|n| n.op_type == "MatMulInteger")
            .count();
        assert!(products > 0, "{}: no MatMulInteger", onnx.display());
        let nodes = plan.model().nodes();
        let ours = nodes.iter().filter(|n| n.op.name() == "Int8MatMul").count();
        let tracts = nodes
            .iter()
            .filter(|n| {
                n.op.name() == "OptMatMul" && n.outputs[0].fact.datum_type == i32::datum_type()
            })
            .count();
        let name = onnx.display();
        if crate::runtime::kernels::int8_matmul::Kernel::chosen()
            .unwrap()
            .is_some()
        {
            assert!(
                ours >= products,
                "{name}: {ours} Int8MatMul for {products} MatMulInteger"
            );
            assert_eq!(tracts, 0, "{name}: integer products left to tract");
        } else {
            assert_eq!(ours, 0, "{name}: Int8MatMul where none of our kernels runs");
            assert!(
                tracts >= products,
                "{name}: {tracts} of tract's integer products for {products}"
            );
        }
    }

    #[test]
    fn the_fixture_encoder_and_mapper_run_their_int8_products_on_our_kernel() -> Result<()> {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixture-tiny");
        for (file, input, input_shape, output, output_shape) in [
            (
                "encoder.int8.onnx",
                "pixel_values",
                &[1, 3, 224, 224][..],
                "image_embeds",
                &[1, 32][..],
            ),
            (
                "mapper.int8.onnx",
                "clip_embedding",
                &[1, 32],
                "prefix_embeds",
                &[1, 4, 32],
            ),
        ] {
            let path = fixture.join(file);
            let graph = FixedGraph::load(
                &path,
                std::fs::read(&path)?,
                (input, input_shape),
                (output, output_shape),
            )?;
            assert_int8_products_on_our_kernel(&path, &graph.plan);
        }
        Ok(())
    }

    /// An ONNX graph of one convolution shaped like the ViT's patch embedding, smaller: `channels` filters of
    /// 3 x `patch` x `patch` at a stride of `patch`, from `pixels` to `patches`, weight `w[c][i] = f(c, i)`.
    fn patch_embedding(
        channels: usize,
        patch: usize,
        weight: impl Fn(usize, usize) -> f32,
    ) -> Vec<u8> {
        use tract_onnx::pb::{
            AttributeProto, GraphProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
            ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, type_proto,
        };
        let ints = |name: &str, values: [i64; 2]| AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: values.to_vec(),
            ..Default::default()
        };
        let value = |name: &str| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let taps = 3 * patch * patch;
        let size = patch as i64;
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                version: 17,
                ..Default::default()
            }],
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: "Conv".into(),
                    input: vec!["pixels".into(), "w".into()],
                    output: vec!["patches".into()],
                    attribute: vec![
                        ints("kernel_shape", [size, size]),
                        ints("strides", [size, size]),
                    ],
                    ..Default::default()
                }],
                initializer: vec![TensorProto {
                    name: "w".into(),
                    dims: vec![channels as i64, 3, size, size],
                    data_type: DataType::Float as i32,
                    float_data: (0..channels * taps)
                        .map(|i| weight(i / taps, i % taps))
                        .collect(),
                    ..Default::default()
                }],
                input: vec![value("pixels")],
                output: vec![value("patches")],
                ..Default::default()
            }),
            ..Default::default()
        };
        model.encode_to_vec()
    }

    /// tract would take this convolution (256 taps) through its lazy im2col; ours builds the im2col once, with the
    /// convolution's numbers.
    #[test]
    fn a_patch_embedding_builds_its_im2col_once() -> Result<()> {
        let (channels, patch, size) = (128, 16, 64);
        let weight = |c: usize, i: usize| ((c * 31 + i * 7) % 17) as f32 / 16.0 - 0.5;
        let bytes = patch_embedding(channels, patch, weight);
        let side = size / patch;
        let graph = FixedGraph::load(
            Path::new("patch_embedding.onnx"),
            bytes,
            ("pixels", &[1, 3, size, size]),
            ("patches", &[1, channels, side, side]),
        )?;
        let ops = op_names(graph.plan.model());
        let count = |name: &str| ops.iter().filter(|op| *op == name).count();
        assert_eq!((count("Im2col"), count("LazyIm2col")), (1, 0), "{ops:?}");

        let pixel = |ch: usize, y: usize, x: usize| ((ch * 5 + y * 3 + x) % 11) as f32 / 10.0;
        let mut input = Vec::new();
        for ch in 0..3 {
            for y in 0..size {
                input.extend((0..size).map(|x| pixel(ch, y, x)));
            }
        }
        let output = graph.run(input)?;
        for c in 0..channels {
            for (py, px) in (0..side).flat_map(|py| (0..side).map(move |px| (py, px))) {
                let mut expected = 0f64;
                for ch in 0..3 {
                    for (dy, dx) in (0..patch).flat_map(|dy| (0..patch).map(move |dx| (dy, dx))) {
                        let tap = (ch * patch + dy) * patch + dx;
                        expected += f64::from(weight(c, tap))
                            * f64::from(pixel(ch, py * patch + dy, px * patch + dx));
                    }
                }
                let actual = output[(c * side + py) * side + px];
                assert!(
                    (f64::from(actual) - expected).abs() < 1e-3,
                    "{c} {py} {px}: {actual} vs {expected}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn a_widened_weight_is_summed_slice_by_slice_to_the_same_values() -> TractResult<()> {
        // 3,000 x 2,000 int8: 24 MB once widened to i32, so it is folded in slices.
        let weight = Tensor::from_shape(
            &[3000, 2000],
            &(0..6_000_000).map(|i| (i % 251) as i8).collect::<Vec<_>>(),
        )?;
        let expected: Vec<i32> = (0..2000)
            .map(|column| {
                (0..3000)
                    .map(|row| i32::from(((row * 2000 + column) % 251) as i8))
                    .sum()
            })
            .collect();
        let mut model = TypedModel::default();
        let konst = model.add_const("weight", weight)?;
        let widened = model.wire_node("widened", Cast::new(i32::datum_type()), &[konst])?;
        let sum = Reduce::new(tvec![0], Reducer::Sum);
        let sum = model.wire_node("sum", sum, &widened)?;
        model.select_output_outlets(&sum)?;
        assert!(sum_of_widened_constant(&model, model.node(sum[0].node))?.is_some());

        fold_constants(&mut model)?;
        assert_eq!(model.nodes().len(), 1, "{model}");
        let folded = model
            .outlet_fact(model.output_outlets()?[0])?
            .konst
            .clone()
            .expect("a constant");
        assert_eq!(folded.shape(), &[1, 2000]);
        assert_eq!(
            folded.try_as_plain_ram()?.as_slice::<i32>()?,
            expected.as_slice()
        );
        Ok(())
    }
}
