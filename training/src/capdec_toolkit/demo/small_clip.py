"""A small CLIP trained here, contrastively, on rendered scenes: a Hugging Face `CLIPModel` (ViT image tower, text
tower over OpenAI's CLIP BPE), saved with `save_pretrained` so that `load_clip(folder)` and the export take exactly
the path a real CLIP takes. It stands in for pretrained CLIP, which cannot be installed here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..models.clip_models import OPENAI_MEAN, OPENAI_STD, Clip
from ..reference.preprocess import resize_and_crop

# HF's CLIP text tower pools at the first `eos_token_id`; open_clip.tokenize ends every text with this id.
CLIP_END_OF_TEXT = 49407
CLIP_VOCAB_SIZE = 49408


@dataclass(frozen=True)
class SmallClipOptions:
    image_size: int = 64
    patch_size: int = 8
    width: int = 96
    layers: int = 3
    heads: int = 4
    text_layers: int = 2
    embedding_size: int = 128
    steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    # Real CLIP's learned temperature reaches its 1/100 clamp early in a long training; this short one starts there
    # (and keeps learning it), since a low temperature is what preserves the modality gap (Liang et al., 2022).
    initial_temperature: float = 0.01
    # Training rows come in pairs (2k, 2k + 1) of scenes that differ only in their shapes (`sample_sibling_pairs`),
    # and a batch holds whole pairs. Without them, colours, layout and background tell a batch's scenes apart so
    # well that the loss never asks for shapes: a 1000-step run knew colours 97% but shapes 33%.
    sibling_pairs: bool = False
    seed: int = 0


def build_small_clip(options: SmallClipOptions) -> Any:
    from transformers import CLIPConfig, CLIPModel

    tower = {"hidden_size": options.width, "intermediate_size": 4 * options.width,
             "num_attention_heads": options.heads}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": CLIP_VOCAB_SIZE, "num_hidden_layers": options.text_layers,
                     "max_position_embeddings": 77, "eos_token_id": CLIP_END_OF_TEXT},
        vision_config={**tower, "image_size": options.image_size, "patch_size": options.patch_size,
                       "num_hidden_layers": options.layers},
        projection_dim=options.embedding_size,
        logit_scale_init_value=math.log(1.0 / options.initial_temperature),
    )
    torch.manual_seed(options.seed)
    return CLIPModel(config)


def image_pixels(images: list[Image.Image], size: int) -> Tensor:
    """uint8 [N, 3, size, size] after the bundle's resize and centre crop; normalised per batch (`normalise`)."""
    arrays = [np.asarray(resize_and_crop(image, size), dtype=np.uint8).transpose(2, 0, 1) for image in images]
    return torch.from_numpy(np.stack(arrays))


def normalise(pixels: Tensor) -> Tensor:
    """The same arithmetic as preprocess.preprocess, so that training sees what the exported encoder sees."""
    mean = torch.tensor(OPENAI_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def clip_token_ids(texts: list[str]) -> Tensor:
    """OpenAI CLIP BPE ids, trimmed to the longest text: the tower is causal and pools at end-of-text, so the padding
    columns beyond it change nothing."""
    ids = open_clip.tokenize(texts)
    if not bool((ids == CLIP_END_OF_TEXT).any(dim=1).all()):
        raise ValueError("a caption is longer than CLIP's 77-token context")
    used = int((ids != 0).sum(dim=1).max())
    return ids[:, :used]


def _learning_rate(options: SmallClipOptions, step: int) -> float:
    if step < options.warmup_steps:
        return options.learning_rate * (step + 1) / options.warmup_steps
    progress = (step - options.warmup_steps) / max(1, options.steps - options.warmup_steps)
    return options.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_small_clip(
    model: Any,
    pixels: Tensor,
    scene_captions: list[list[str]],
    options: SmallClipOptions,
    on_step: Callable[[int, float], None] = lambda step, loss: None,
) -> list[float]:
    """CLIP's symmetric contrastive loss with its learned temperature, one random caption of each scene a step.
    Trains in place; returns every step's loss."""
    generator = torch.Generator().manual_seed(options.seed)
    flat = [caption for texts in scene_captions for caption in texts]
    first_index = np.cumsum([0] + [len(texts) for texts in scene_captions])
    token_ids = clip_token_ids(flat)
    # As CLIP: no weight decay on gains, biases and the temperature.
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    kept = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": 0.1}, {"params": kept, "weight_decay": 0.0}], lr=options.learning_rate
    )
    model.train()
    losses = []
    for step in range(options.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(options, step)
        if options.sibling_pairs:
            pairs = torch.randint(len(scene_captions) // 2, (options.batch_size // 2,), generator=generator)
            scenes = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).reshape(-1)
        else:
            scenes = torch.randint(len(scene_captions), (options.batch_size,), generator=generator)
        choice = torch.rand(options.batch_size, generator=generator)
        rows = [
            int(first_index[s]) + int(c * len(scene_captions[s])) for s, c in zip(scenes.tolist(), choice.tolist())
        ]
        ids = token_ids[rows]
        output = model(
            input_ids=ids, attention_mask=(ids != 0).long(), pixel_values=normalise(pixels[scenes]), return_loss=True
        )
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        with torch.no_grad():  # CLIP's clamp: a temperature below 1/100 makes training unstable
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(output.loss.item())
        on_step(step, losses[-1])
    model.eval()
    return losses


def save_small_clip(model: Any, folder: Path) -> None:
    """A folder `load_clip` reads as a Hugging Face CLIP, with the preprocessing it was trained with."""
    model.save_pretrained(folder)
    processor = {"image_mean": list(OPENAI_MEAN), "image_std": list(OPENAI_STD),
                 "crop_size": model.config.vision_config.image_size, "resample": 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


@dataclass(frozen=True)
class ModalityReport:
    image_text_cosine: float  # an image and its own captions
    text_text_cosine: float  # two captions of the same scene
    unrelated_image_text_cosine: float  # an image and another scene's caption
    centroid_distance: float  # between the mean normalised image and text embeddings (Liang et al.'s gap)
    image_to_text_top1: float  # retrieval among one caption per scene; a hit is any caption of the right scene
    scenes: int


@torch.no_grad()
def modality_report(clip: Clip, pixels: Tensor, scene_captions: list[list[str]]) -> ModalityReport:
    """How far apart the small CLIP puts images and texts: CapDec's noise exists to bridge this gap."""
    images = F.normalize(clip.image_encoder(normalise(pixels)), dim=-1)
    first = F.normalize(clip.encode_text([texts[0] for texts in scene_captions]), dim=-1)
    second = F.normalize(clip.encode_text([texts[1] for texts in scene_captions]), dim=-1)
    similarity = images @ first.T
    count = len(scene_captions)
    off_diagonal = ~torch.eye(count, dtype=torch.bool)
    best = similarity.argmax(dim=1).tolist()
    hits = sum(scene_captions[found][0] in scene_captions[index] for index, found in enumerate(best))
    return ModalityReport(
        image_text_cosine=float(similarity.diagonal().mean()),
        text_text_cosine=float((first * second).sum(dim=1).mean()),
        unrelated_image_text_cosine=float(similarity[off_diagonal].mean()),
        centroid_distance=float((images.mean(dim=0) - first.mean(dim=0)).norm()),
        image_to_text_top1=hits / count,
        scenes=count,
    )
