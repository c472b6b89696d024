"""Real-size bundles with random weights, for speed and memory at the true size of the networks.

Too large for git (GPT-2 alone is ~500 MB in fp32), so they are generated, deterministically, and checked
against the committed checksums of their manifests (models/real-size.sha256; a manifest holds every file's hash).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..export.export import ExportOptions, export_bundle
from ..models.checkpoint import CapDecConfig, CapDecModel, load_checkpoint, save_checkpoint
from ..models.clip_models import OPENAI_MEAN, OPENAI_STD, load_clip
from ..models.gpt2 import Gpt2Config
from ..models.mapper import MapperConfig
from ..models.seeded import reseed_
from ..reference.bundle import Bundle, BundleError
from ..reference.tokenizer import END_OF_TEXT_ID, PERIOD_ID

GPT2 = Gpt2Config(layers=12, heads=12, width=768, vocab_size=50257, max_positions=1024)
DISTILGPT2 = Gpt2Config(layers=6, heads=12, width=768, vocab_size=50257, max_positions=1024)


@dataclass(frozen=True)
class RealSize:
    name: str
    clip: str  # "vit-b-32" or "rn50x4"
    mapper: MapperConfig
    gpt: Gpt2Config
    description: str
    caption_vocabulary: int | None = None
    """Keep this many GPT-2 tokens (`first_token_ids`); None keeps all."""


def first_token_ids(count: int) -> list[int]:
    """A caption vocabulary for random weights, which use no tokens of their own: GPT-2's first `count - 1` ids (the
    256 bytes, then BPE merges in the order they were learnt, the most frequent pairs first, so the common words),
    "." among them, and end-of-text."""
    return sorted(set(range(count - 1)) | {PERIOD_ID, END_OF_TEXT_ID})


CONFIGS = {
    config.name: config
    for config in (
        RealSize(
            "vitb32-mlp-gpt2",
            "vit-b-32",
            MapperConfig("mlp", 512, 768, prefix_length=10),
            GPT2,
            "(a) CLIP ViT-B/32 + MLP mapper (prefix 10) + GPT-2 124M",
        ),
        RealSize(
            "vitb32-mlp-distilgpt2",
            "vit-b-32",
            MapperConfig("mlp", 512, 768, prefix_length=10),
            DISTILGPT2,
            "(b) CLIP ViT-B/32 + MLP mapper (prefix 10) + 6-layer distilled GPT-2",
        ),
        RealSize(
            "vitb32-mlp-distilgpt2-vocab12k",
            "vit-b-32",
            MapperConfig("mlp", 512, 768, prefix_length=10),
            DISTILGPT2,
            "(b) with a caption vocabulary of 12,000 tokens (the size of COCO's): GPT-2's first 11,999 ids and "
            "end-of-text",
            caption_vocabulary=12000,
        ),
        RealSize(
            "rn50x4-transformer-gpt2",
            "rn50x4",
            MapperConfig("transformer", 640, 768, prefix_length=40, clip_length=40, layers=8, heads=8),
            GPT2,
            "(c) CapDec's paper setup: CLIP RN50x4 (288 px) + transformer mapper (prefix 40, 8 layers) + GPT-2",
        ),
    )
}


def _save_random_clip(kind: str, folder: Path, seed: int) -> None:
    """The real architectures, saved the way their public weights are published, so load_clip reads them."""
    if kind == "vit-b-32":
        from transformers import CLIPConfig, CLIPModel

        config = CLIPConfig(
            text_config={"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                         "num_attention_heads": 8, "max_position_embeddings": 77, "vocab_size": 49408},
            vision_config={"image_size": 224, "patch_size": 32, "hidden_size": 768, "intermediate_size": 3072,
                           "num_hidden_layers": 12, "num_attention_heads": 12},
            projection_dim=512,
        )
        model = CLIPModel(config)
        reseed_(model, seed)
        model.save_pretrained(folder)
        return
    import open_clip

    model_config = open_clip.get_model_config("RN50x4")
    model = open_clip.create_model("RN50x4", pretrained=None)
    reseed_(model, seed)
    preprocess = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_config, "preprocess_cfg": preprocess}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")


def source_folder(bundle_folder: Path) -> Path:
    """Where the torch weights behind a real-size bundle are kept, for the PyTorch side of the benchmark."""
    return bundle_folder.with_name(bundle_folder.name + ".source")


def generate(config: RealSize, out: Path, seed: int = 0) -> Bundle:
    torch.manual_seed(seed)
    source = source_folder(out)
    clip_folder = source / "clip"
    clip_folder.mkdir(parents=True, exist_ok=True)
    # Weights that are the same bits on every CPU (models/seeded.py), so that the checksums hold everywhere.
    _save_random_clip(config.clip, clip_folder, seed)
    checkpoint = source / f"{config.name}_prefix-000.pt"
    capdec = CapDecModel(CapDecConfig(config.mapper, config.gpt))
    reseed_(capdec, seed + 1)
    save_checkpoint(capdec, checkpoint)
    description = f"Random weights, real size, for benchmarks only: {config.description}."
    token_ids = None if config.caption_vocabulary is None else tuple(first_token_ids(config.caption_vocabulary))
    return export_bundle(
        load_clip(str(clip_folder)), load_checkpoint(checkpoint), out,
        ExportOptions(config.name, description, token_ids=token_ids),
    )


def manifest_sha256(bundle_folder: Path) -> str:
    return hashlib.sha256((bundle_folder / "bundle.toml").read_bytes()).hexdigest()


def read_checksums(path: Path) -> dict[str, str]:
    checksums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            checksums[name] = digest
    return checksums


def ensure_bundle(name: str, folder: Path, checksums: Path) -> Bundle:
    """The named real-size bundle under `folder`, generated if missing, always checked against its checksum."""
    out = folder / name
    expected = read_checksums(checksums).get(name)
    if expected is None:
        raise BundleError(f"{checksums}: no checksum for {name}")
    if not (out / "bundle.toml").is_file() or not source_folder(out).is_dir():
        generate(CONFIGS[name], out)
    actual = manifest_sha256(out)
    if actual != expected:
        raise BundleError(
            f"{out / 'bundle.toml'}: SHA-256 {actual}, {checksums} expects {expected} (a bundle generated before the"
            f" checksums changed: delete {out} and {source_folder(out)} to generate it again)"
        )
    return Bundle.open(out)
