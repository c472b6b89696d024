"""CLIP from Hugging Face (`CLIPModel`, ViT) or OpenCLIP (OpenAI's ResNets such as RN50x4, and ViTs), behind one
interface: an image tower to export and a text tower to train against."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from torch import Tensor, nn

from ..errors import UserError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipError(UserError):
    """A CLIP model that cannot be loaded; the message says from where and why."""


@dataclass
class Clip:
    image_encoder: nn.Module  # pixel_values [1, 3, S, S] -> image_embeds [1, E], not normalised
    encode_text: Callable[[list[str]], Tensor]  # captions -> text embeddings [N, E], not normalised
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_size: int
    source: str


class _HfImageEncoder(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.vision_model: nn.Module = model.vision_model
        self.visual_projection: nn.Module = model.visual_projection

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)


class _OpenClipImageEncoder(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.visual: nn.Module = model.visual

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.visual(pixel_values)


def _clip_tokens(texts: list[str]) -> Tensor:
    # OpenAI's CLIP BPE, shipped inside open_clip, so it works offline for Hugging Face towers too.
    return open_clip.tokenize(texts)


def _load_hf(source: str) -> Clip:
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(source).eval()
    vision = model.config.vision_config
    mean, std = OPENAI_MEAN, OPENAI_STD
    processor_file = Path(source) / "preprocessor_config.json"
    if processor_file.is_file():
        processor = json.loads(processor_file.read_text())
        mean = tuple(processor.get("image_mean", mean))  # type: ignore[assignment]
        std = tuple(processor.get("image_std", std))  # type: ignore[assignment]

    def encode_text(texts: list[str]) -> Tensor:
        ids = _clip_tokens(texts)
        mask = (ids != 0).long()
        pooled = model.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return model.text_projection(pooled)

    return Clip(
        _HfImageEncoder(model), encode_text, vision.image_size, mean, std, model.config.projection_dim, source
    )


def _load_open_clip(name: str, pretrained: str | None, source: str) -> Clip:
    model = open_clip.create_model(name, pretrained=pretrained).eval()
    preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = model.visual.image_size
    input_size = size[0] if isinstance(size, (tuple, list)) else int(size)
    embedding_size = int(model.encode_image(torch.zeros(1, 3, input_size, input_size)).shape[-1])
    return Clip(
        _OpenClipImageEncoder(model),
        lambda texts: model.encode_text(_clip_tokens(texts)),
        input_size,
        tuple(preprocess.get("mean", OPENAI_MEAN)),  # type: ignore[arg-type]
        tuple(preprocess.get("std", OPENAI_STD)),  # type: ignore[arg-type]
        embedding_size,
        source,
    )


def load_clip(spec: str) -> Clip:
    """`spec` is a local directory (Hugging Face `config.json` or OpenCLIP `open_clip_config.json`), an OpenAI CLIP
    name known to OpenCLIP (`RN50x4`, `ViT-B-32`: downloads OpenAI's weights), or a Hugging Face model name."""
    path = Path(spec)
    try:
        if path.is_dir():
            if (path / "open_clip_config.json").is_file():
                return _load_open_clip(f"local-dir:{path}", None, spec)
            if (path / "config.json").is_file():
                return _load_hf(spec)
            raise ClipError(f"{spec}: a directory without config.json (Hugging Face) or open_clip_config.json")
        if spec in open_clip.list_models():
            return _load_open_clip(spec, "openai", spec)
        return _load_hf(spec)
    except ClipError:
        raise
    except Exception as error:
        raise ClipError(f"{spec}: cannot load CLIP ({error})") from error
