"""models/fixture-tiny: random weights, tiny widths and depths, but the real structure, the real GPT-2 vocabulary
and the real preprocessing; plus goldens for real photographs. Deterministic: the same command rewrites the same
bytes."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..export.export import ExportOptions, drift_report, export_bundle, format_drift
from ..export.vocabulary import corpus_token_ids
from ..models.checkpoint import CapDecConfig, CapDecModel, load_checkpoint, save_checkpoint
from ..models.clip_models import load_clip
from ..models.gpt2 import Gpt2Config
from ..models.mapper import MapperConfig
from ..models.seeded import measured_std, reseed_
from ..reference.preprocess import load_rgb, resize_and_crop
from ..reference.bundle import Bundle
from ..reference.reference import goldens
from ..reference.tokenizer import END_OF_TEXT_ID, PERIOD_ID

# scikit-image's sample photographs (public domain or CC0, see skimage/data/README.txt): colour, grey, JPEG.
PHOTOGRAPHS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png")
SEED = 20261201
DESCRIPTION = (
    "Test fixture, not a captioner: random weights in CapDec's structure (tiny ViT CLIP 224 px / patch 32, "
    "transformer mapper, 2-layer GPT-2 with the real 50,257-token vocabulary). Made by `capdec-toolkit fixture`."
)
VOCAB_DESCRIPTION = (
    "Test fixture, not a captioner: models/fixture-tiny's random weights with a caption vocabulary (the GPT-2 "
    "tokens of a few everyday captions; bundle format version 2). Made by `capdec-toolkit fixture`."
)


def tiny_hf_clip(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"image_size": 224, "patch_size": 32, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=32,
    )
    model = CLIPModel(config)
    reseed_(model, SEED)
    model.save_pretrained(folder)


def tiny_capdec() -> CapDecModel:
    config = CapDecConfig(
        MapperConfig("transformer", clip_size=32, width=32, prefix_length=4, clip_length=4, layers=2, heads=4),
        Gpt2Config(layers=2, heads=2, width=32, vocab_size=50257, max_positions=128),
    )
    model = CapDecModel(config)

    def wide(module: nn.Module, name: str, parameter: nn.Parameter) -> float:
        # Wide random weights make the next-token distribution peaked, so golden beams are far from ties.
        return measured_std(parameter) if isinstance(module, nn.LayerNorm) or name == "bias" else 0.3

    reseed_(model, SEED + 1, wide)
    return model.eval()


def photographs(images: Path) -> list[Path]:
    import skimage

    source = Path(skimage.data.__file__).parent
    images.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PHOTOGRAPHS:
        shutil.copyfile(source / name, images / name)
        paths.append(images / name)
    return paths


def write_pil_crops(paths: list[Path], size: int, folder: Path) -> None:
    """PIL's resized crop of each lossy photograph, losslessly stored. JPEG decoders may round their inverse DCT
    differently by one level (the Rust side's does), and on random int8 weights one level changes the tokens; these
    crops let the Rust parity test check its graphs and search on exactly the pixels the goldens saw."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            resize_and_crop(load_rgb(path), size).save(folder / f"{path.name}.png")


# The caption vocabulary of the version-2 fixture: everyday captions, so that its rows are ordinary GPT-2 tokens.
VOCABULARY_CAPTIONS = (
    "a man standing next to a car.",
    "a woman riding a bicycle down the street.",
    "two dogs playing in the snow.",
    "a cat sleeping on a red couch.",
    "a person holding an umbrella in the rain.",
    "a delivery truck parked in front of a house.",
    "an empty driveway at night.",
    "a child throwing a ball in the garden.",
    "a bird sitting on a fence.",
    "someone at the front door with a package.",
    "a rocket on a launch pad.",
    "an astronaut in a white suit holding a flag.",
    "a cup of coffee on a saucer.",
    "a photographer with a camera on a tripod.",
)


def build_fixture(out: Path, goldens_file: Path, images: Path, vocab_out: Path, vocab_goldens_file: Path) -> str:
    """The fixture with GPT-2's whole vocabulary (`out`, format version 1) and the same model with a caption
    vocabulary (`vocab_out`, version 2), each with its goldens."""
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as scratch:
        clip_folder = Path(scratch) / "clip"
        tiny_hf_clip(clip_folder)
        checkpoint = Path(scratch) / "fixture_prefix-000.pt"
        save_checkpoint(tiny_capdec(), checkpoint)
        corpus = Path(scratch) / "captions.txt"
        corpus.write_text("\n".join(VOCABULARY_CAPTIONS) + "\n")
        # Through the same path a user's export takes: a saved CLIP folder, a checkpoint file, a corpus file.
        clip = load_clip(str(clip_folder))
        model = load_checkpoint(checkpoint)
        token_ids = tuple(corpus_token_ids(corpus, [END_OF_TEXT_ID, PERIOD_ID]))
        bundles = []
        for folder, name, ids in ((out, "fixture-tiny", None), (vocab_out, "fixture-tiny-vocab", token_ids)):
            if folder.exists():
                shutil.rmtree(folder)
            description = DESCRIPTION if ids is None else VOCAB_DESCRIPTION
            options = ExportOptions(name, description, max_tokens=20, token_ids=ids)
            bundles.append(export_bundle(clip, model, folder, options))
    paths = photographs(images)
    write_pil_crops(paths, bundles[0].manifest["encoder"]["input_size"], images.parent / "pil-crops")
    reports = [_write_goldens(bundle, paths, file) for bundle, file in zip(bundles, (goldens_file, vocab_goldens_file))]
    return "\n".join(f"{bundle.manifest['name']}: {format_drift(report)}" for bundle, report in zip(bundles, reports))


def _write_goldens(bundle: Bundle, paths: list[Path], goldens_file: Path) -> dict[str, Any]:
    report = drift_report(bundle, paths)
    data = goldens(bundle, paths, relative_to=goldens_file.parent)
    data["int8_drift"] = {key: report[key] for key in ("embedding_cosine_min", "prefix_max_abs", "captions_identical")}
    goldens_file.parent.mkdir(parents=True, exist_ok=True)
    goldens_file.write_text(json.dumps(data, indent=1) + "\n")
    return report
