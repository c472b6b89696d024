"""Export: real graphs, checked against torch and between precisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from capdec_toolkit.export.export import ExportOptions, drift_report, export_bundle
from capdec_toolkit.models.checkpoint import load_checkpoint
from capdec_toolkit.models.clip_models import load_clip
from capdec_toolkit.reference.bundle import Bundle
from capdec_toolkit.reference.preprocess import load_rgb, preprocess
from capdec_toolkit.reference.reference import OrtCaptioner, read_token_table


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("clip_kind", ["hf_vit", "open_clip_resnet"])
def test_export_matches_torch(
    clip_kind: str, checkpoint: Path, hf_clip_dir: Path, open_clip_resnet_dir: Path, photos: list[Path], tmp_path: Path
) -> None:
    clip_dir = hf_clip_dir if clip_kind == "hf_vit" else open_clip_resnet_dir
    clip = load_clip(str(clip_dir))
    model = load_checkpoint(checkpoint)
    bundle = export_bundle(clip, model, tmp_path / "bundle", ExportOptions("test", "test", max_tokens=6))
    variant = bundle.variant("fp32")

    pixels = preprocess(load_rgb(photos[0]), clip.input_size, clip.mean, clip.std)
    with torch.no_grad():
        expected_embedding = clip.image_encoder(torch.from_numpy(pixels)).numpy()
    (embedding,) = _session(bundle.path(variant["encoder"]["file"])).run(None, {"pixel_values": pixels})
    assert _relative_error(embedding, expected_embedding) < 1e-4

    clip_embedding = (embedding / np.linalg.norm(embedding)).astype(np.float32)
    with torch.no_grad():
        expected_prefix = model.clip_project(torch.from_numpy(clip_embedding)).numpy()
    (prefix,) = _session(bundle.path(variant["mapper"]["file"])).run(None, {"clip_embedding": clip_embedding})
    assert prefix.shape == (1, 4, 32)
    assert _relative_error(prefix, expected_prefix) < 1e-4

    # The cached decoder, called over the prefix then one token at a time, against torch's full-sequence logits.
    tokens = [262, 3797, 13]
    with torch.no_grad():
        wte = model.gpt.transformer.wte.weight
        full = torch.cat([torch.from_numpy(prefix), wte[tokens][None]], dim=1)
        expected_logits = model.gpt.sequence_logits(full)[0].numpy()
    decoder = _session(bundle.path(variant["decoder"]["file"]))
    names = [node.name for node in decoder.get_inputs()]
    past = [np.zeros((1, 2, 0, 16), np.float32)] * 4
    logits, *past = decoder.run(None, dict(zip(names, [prefix, np.arange(4)[None], *past])))
    assert _relative_error(logits[0], expected_logits[3]) < 1e-4
    table = read_token_table(bundle.path(variant["token_embeddings"]["file"]), "f32", 50257, 32)
    for step, token in enumerate(tokens):
        feeds = [table[[token]][None], np.array([[4 + step]]), *past]
        logits, *past = decoder.run(None, dict(zip(names, feeds)))
        assert past[0].shape == (1, 2, 5 + step, 16)
        assert _relative_error(logits[0], expected_logits[4 + step]) < 1e-4


def test_int8_graphs_use_integer_matmuls_and_drift_is_bounded(
    hf_clip_dir: Path, checkpoint: Path, photos: list[Path], tmp_path: Path
) -> None:
    bundle = export_bundle(
        load_clip(str(hf_clip_dir)), load_checkpoint(checkpoint), tmp_path / "b", ExportOptions("t", "t", 6)
    )
    for graph in ("encoder", "mapper", "decoder"):
        model = onnx.load(str(bundle.path(bundle.variant("int8")[graph]["file"])))
        ops = {node.op_type for node in model.graph.node}
        assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
        assert not ops & {"QuantizeLinear", "DequantizeLinear", "Gemm"}
        for tensor in model.graph.initializer:
            if tensor.name.endswith("_scale"):
                assert len(tensor.dims) == 0, f"{graph}: {tensor.name} is not per-tensor"
    report = drift_report(bundle, photos)
    assert report["images"] == len(photos)
    assert report["embedding_cosine_min"] > 0.999
    assert 0 <= report["captions_identical"] <= len(photos)


def test_bundle_manifest_names_every_file_with_its_hash(hf_clip_dir: Path, checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    export_bundle(load_clip(str(hf_clip_dir)), load_checkpoint(checkpoint), folder, ExportOptions("t", "t", 6))
    manifest = Bundle.open(folder).manifest
    listed = {entry["path"] for entry in manifest["files"]}
    on_disk = {path.name for path in folder.iterdir()} - {"bundle.toml"}
    assert listed == on_disk
    (folder / "mapper.int8.onnx").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="mapper.int8.onnx: size or SHA-256 differs"):
        Bundle.open(folder)


def test_reference_captioner_caption_is_lowercase_text_of_tokens(
    hf_clip_dir: Path, checkpoint: Path, photos: list[Path], tmp_path: Path
) -> None:
    bundle = export_bundle(
        load_clip(str(hf_clip_dir)), load_checkpoint(checkpoint), tmp_path / "b", ExportOptions("t", "t", 6)
    )
    captioner = OrtCaptioner(bundle, "fp32")
    prefix = captioner.embed(photos[0]).prefix
    tokens, text, mean_log_prob = captioner.caption(prefix, captioner.rules(5))
    assert 1 <= len(tokens) <= 6
    assert text == text.lower()
    assert mean_log_prob < 0
