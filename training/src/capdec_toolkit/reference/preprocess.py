"""The image preprocessing contract (docs/bundle-format.md): CLIP's torchvision pipeline over PIL."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if width <= height:
        new_width, new_height = size, int(size * height / width)
    else:
        new_width, new_height = int(size * width / height), size
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    # Python's round() is half-to-even, as torchvision's centre crop uses it.
    left = round((new_width - size) / 2)
    top = round((new_height - size) / 2)
    return image.crop((left, top, left + size, top + size))


def preprocess(image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """[1, 3, size, size] float32, normalised."""
    pixels = np.asarray(resize_and_crop(image, size), dtype=np.float32) / np.float32(255.0)
    normalised = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])
