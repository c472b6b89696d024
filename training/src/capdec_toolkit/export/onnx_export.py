"""torch -> fp32 ONNX graphs of the bundle contract, then int8 graphs that tract runs correctly."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import Tensor, nn

from ..models.gpt2 import Gpt2

OPSET = 17


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
            dynamic_axes: dict[str, dict[int, str]] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    model = onnx.load(str(path))
    _gemm_to_matmul(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _gemm_to_matmul(model: onnx.ModelProto) -> None:
    """quantize_dynamic skips Gemm; a MatMul with a constant [in, out] weight (+ Add) is quantized."""
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        plain = attributes.get("alpha", 1.0) == 1.0 and attributes.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or not plain or attributes.get("transA", 0) or node.input[1] not in initializers:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attributes.get("transB", 0):
            weight = weight.T
        weight_name = f"{node.input[1]}_as_matmul"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        product = f"{node.output[0]}_matmul" if len(node.input) > 2 else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_matmul"))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_add"))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def export_encoder(encoder: nn.Module, input_size: int, path: Path) -> None:
    _export(encoder, (torch.zeros(1, 3, input_size, input_size),), path, ["pixel_values"], ["image_embeds"])


def export_mapper(mapper: nn.Module, clip_size: int, path: Path) -> None:
    _export(mapper, (torch.zeros(1, clip_size),), path, ["clip_embedding"], ["prefix_embeds"])


def decoder_io_names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_{kind}_{index}" for index in range(layers) for kind in ("key", "value")]
    present = [f"present_{kind}_{index}" for index in range(layers) for kind in ("key", "value")]
    return ["inputs_embeds", "position_ids", *past], ["logits", *present]


def export_decoder(gpt: Gpt2, path: Path) -> None:
    config = gpt.config
    inputs, outputs = decoder_io_names(config.layers)
    batch, seq, past_length = 2, 3, 2  # distinct sizes so the tracer keeps them apart
    args = (
        torch.zeros(batch, seq, config.width),
        torch.arange(past_length, past_length + seq).expand(batch, seq).contiguous(),
        *[torch.zeros(batch, config.heads, past_length, config.head_dim) for _ in range(2 * config.layers)],
    )
    axes: dict[str, dict[int, str]] = {"inputs_embeds": {0: "batch", 1: "seq"}, "position_ids": {0: "batch", 1: "seq"}}
    axes.update({name: {0: "batch", 2: "past"} for name in inputs[2:]})
    axes["logits"] = {0: "batch"}
    axes.update({name: {0: "batch", 2: "total"} for name in outputs[1:]})
    _export(gpt, args, path, inputs, outputs, axes)


def quantize(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8 in MatMulInteger form, per-tensor weights: the scheme tract computes correctly."""
    quantize_dynamic(
        str(fp32_path),
        str(int8_path),
        op_types_to_quantize=["MatMul"],
        per_channel=False,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )


def write_token_table(weight: Tensor, path: Path, dtype: str) -> None:
    """The decoder's token embeddings for the runtime to look up (docs/bundle-format.md)."""
    table = weight.detach().float().numpy()
    with path.open("wb") as file:
        if dtype == "f32":
            file.write(table.astype("<f4").tobytes())
            return
        scales = np.abs(table).max(axis=1) / 127.0
        safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
        quantized = np.clip(np.rint(table / safe[:, None]), -127, 127).astype(np.int8)
        file.write(quantized.tobytes())
        file.write(safe.astype("<f4").tobytes())
