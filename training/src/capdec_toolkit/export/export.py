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
from ..reference.bundle import GRAPHS, TABLE_DTYPE, TOKEN_IDS_FILE, Bundle, Manifest, graph_file, table_file
from ..reference.reference import OrtCaptioner
from ..reference.tokenizer import END_OF_TEXT_ID, PERIOD_ID, VOCAB_FILE
from .onnx_export import export_decoder, export_encoder, export_mapper, quantize, write_token_table
from .vocabulary import VocabularyError, keep_tokens


@dataclass(frozen=True)
class ExportOptions:
    name: str
    description: str
    max_tokens: int = 67
    beam_size: int = 5
    precisions: tuple[str, ...] = ("fp32", "int8")
    token_ids: tuple[int, ...] | None = None
    """The caption vocabulary (`vocabulary.corpus_token_ids`): the GPT-2 ids the decoder keeps; None keeps all."""


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
            "vocab_size": len(options.token_ids) if options.token_ids else gpt.vocab_size,
            "max_positions": gpt.max_positions,
            "end_of_text_id": END_OF_TEXT_ID,
            "stop_token_ids": [PERIOD_ID],
            "max_tokens": options.max_tokens,
            **({"token_ids": TOKEN_IDS_FILE} if options.token_ids else {}),
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
    gpt = model.gpt
    if options.token_ids:
        if gpt.config.vocab_size != END_OF_TEXT_ID + 1:
            raise VocabularyError(
                f"a caption vocabulary keeps GPT-2 ids, and this decoder has {gpt.config.vocab_size} tokens, not GPT-2's"
                f" {END_OF_TEXT_ID + 1}"
            )
        missing = {END_OF_TEXT_ID, PERIOD_ID} - set(options.token_ids)
        if missing:
            raise VocabularyError(f"the caption vocabulary lacks GPT-2 ids {sorted(missing)} (end-of-text, the stop token)")
        gpt = keep_tokens(gpt, list(options.token_ids))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bundle.toml").unlink(missing_ok=True)  # a half-written bundle must not look complete
    export_encoder(clip.image_encoder, clip.input_size, out / graph_file("encoder", "fp32"))
    export_mapper(model.clip_project, model.config.mapper.clip_size, out / graph_file("mapper", "fp32"))
    export_decoder(gpt, out / graph_file("decoder", "fp32"))
    if "int8" in options.precisions:
        for graph in GRAPHS:
            quantize(out / graph_file(graph, "fp32"), out / graph_file(graph, "int8"))
    for precision in options.precisions:
        write_token_table(gpt.transformer.wte.weight, out / table_file(precision), TABLE_DTYPE[precision])
    if "fp32" not in options.precisions:
        for graph in GRAPHS:
            (out / graph_file(graph, "fp32")).unlink()
    if options.token_ids:
        np.array(options.token_ids, dtype="<u4").tofile(out / TOKEN_IDS_FILE)
        _write_kept_vocabulary(set(options.token_ids), out / "vocab.tiktoken")
    else:
        (out / TOKEN_IDS_FILE).unlink(missing_ok=True)
        shutil.copyfile(VOCAB_FILE, out / "vocab.tiktoken")
    manifest_for(clip, model, options).write(out)
    return Bundle.open(out)


def _write_kept_vocabulary(token_ids: set[int], path: Path) -> None:
    """GPT-2's vocabulary file, only the lines of kept tokens, under their GPT-2 ranks."""
    lines = [line for line in VOCAB_FILE.read_text().splitlines() if line and int(line.split()[1]) in token_ids]
    path.write_text("".join(line + "\n" for line in lines))


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
