"""CLIP + CapDec checkpoint -> a model bundle (fp32 and int8), with a report of how far int8 drifts from fp32."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..models.checkpoint import CapDecModel
from ..models.clip_models import Clip
from ..reference.bundle import GRAPHS, Bundle, Manifest, graph_file, table_file, TABLE_DTYPE
from ..reference.reference import OrtCaptioner
from ..reference.tokenizer import END_OF_TEXT_ID, PERIOD_ID, VOCAB_FILE
from .onnx_export import export_decoder, export_encoder, export_mapper, quantize, write_token_table


@dataclass(frozen=True)
class ExportOptions:
    name: str
    description: str
    max_tokens: int = 67
    beam_size: int = 5
    precisions: tuple[str, ...] = ("fp32", "int8")


def manifest_for(clip: Clip, model: CapDecModel, options: ExportOptions) -> Manifest:
    gpt = model.config.gpt
    mapper = model.config.mapper
    return Manifest(
        name=options.name,
        description=options.description,
        encoder={
            "input_size": clip.input_size,
            "resize_filter": "bicubic",
            "crop": "center",
            "mean": [float(value) for value in clip.mean],
            "std": [float(value) for value in clip.std],
            "embedding_size": clip.embedding_size,
            "normalized_in_graph": False,
        },
        mapper={
            "kind": mapper.kind,
            "prefix_length": mapper.prefix_length,
            "input_size": mapper.clip_size,
            "output_size": mapper.width,
        },
        decoder={
            "architecture": "gpt2",
            "layers": gpt.layers,
            "heads": gpt.heads,
            "width": gpt.width,
            "vocab_size": gpt.vocab_size,
            "max_positions": gpt.max_positions,
            "end_of_text_id": END_OF_TEXT_ID,
            "stop_token_ids": [PERIOD_ID],
            "max_tokens": options.max_tokens,
        },
        precisions=list(options.precisions),
        decoding={"beam_size": options.beam_size, "length_normalized": True, "lowercase": True},
    )


def export_bundle(clip: Clip, model: CapDecModel, out: Path, options: ExportOptions) -> Bundle:
    if clip.embedding_size != model.config.mapper.clip_size:
        raise ValueError(
            f"CLIP {clip.source} embeds to {clip.embedding_size} dimensions, "
            f"but the checkpoint's mapper takes {model.config.mapper.clip_size}"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "bundle.toml").unlink(missing_ok=True)  # a half-written bundle must not look complete
    export_encoder(clip.image_encoder, clip.input_size, out / graph_file("encoder", "fp32"))
    export_mapper(model.clip_project, model.config.mapper.clip_size, out / graph_file("mapper", "fp32"))
    export_decoder(model.gpt, out / graph_file("decoder", "fp32"))
    if "int8" in options.precisions:
        for graph in GRAPHS:
            quantize(out / graph_file(graph, "fp32"), out / graph_file(graph, "int8"))
    for precision in options.precisions:
        write_token_table(model.gpt.transformer.wte.weight, out / table_file(precision), TABLE_DTYPE[precision])
    if "fp32" not in options.precisions:
        for graph in GRAPHS:
            (out / graph_file(graph, "fp32")).unlink()
    shutil.copyfile(VOCAB_FILE, out / "vocab.tiktoken")
    manifest_for(clip, model, options).write(out)
    return Bundle.open(out)


def drift_report(bundle: Bundle, images: list[Path]) -> dict[str, Any]:
    """int8 against fp32 on real images: embedding cosine, prefix max-abs difference, caption agreement."""
    fp32 = OrtCaptioner(bundle, "fp32")
    int8 = OrtCaptioner(bundle, "int8")
    beam_size = bundle.manifest["decoding"]["beam_size"]
    rows: list[dict[str, Any]] = []
    for image in images:
        reference, quantized = fp32.embed(image), int8.embed(image)
        cosine = float(
            np.dot(reference.embedding, quantized.embedding)
            / (np.linalg.norm(reference.embedding) * np.linalg.norm(quantized.embedding))
        )
        _, fp32_text, _ = fp32.caption(reference.prefix, fp32.rules(beam_size))
        _, int8_text, _ = int8.caption(quantized.prefix, int8.rules(beam_size))
        rows.append(
            {
                "image": str(image),
                "embedding_cosine": cosine,
                "prefix_max_abs": float(np.abs(reference.prefix - quantized.prefix).max()),
                "fp32_caption": fp32_text,
                "int8_caption": int8_text,
            }
        )
    return {
        "images": len(rows),
        "embedding_cosine_min": min(row["embedding_cosine"] for row in rows),
        "prefix_max_abs": max(row["prefix_max_abs"] for row in rows),
        "captions_identical": sum(row["fp32_caption"] == row["int8_caption"] for row in rows),
        "per_image": rows,
    }


def format_drift(report: dict[str, Any]) -> str:
    return (
        f"int8 vs fp32 over {report['images']} images: embedding cosine >= {report['embedding_cosine_min']:.6f}, "
        f"prefix max-abs {report['prefix_max_abs']:.4g}, "
        f"identical captions {report['captions_identical']}/{report['images']}"
    )


def write_report(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
