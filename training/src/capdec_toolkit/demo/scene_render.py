"""Draws a `Scene` with PIL: jittered colours, a shaded background, low-contrast clutter and sensor-like noise, so
that the small CLIP has to look at shapes and colours rather than at exact pixel values."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .scene_world import BACKGROUNDS, COLOURS, RGB, Item, Scene

RENDER_SIZE = 96
# Polygon circumradius per unit of an item's radius, so that every shape covers a similar area.
_SHAPE_SCALE = {"square": 1.15, "triangle": 1.3, "star": 1.3, "diamond": 1.25}


def _jitter(colour: RGB, rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(channel + rng.integers(-amount, amount + 1), 0, 255)) for channel in colour)
    return r, g, b


def _polygon(item: Item, size: int) -> list[tuple[float, float]]:
    centre_x, centre_y = item.x * size, item.y * size
    radius = item.radius * size * _SHAPE_SCALE[item.shape]
    if item.shape == "square":
        angles, radii, squash = [45 + 90 * k for k in range(4)], [radius] * 4, 1.0
    elif item.shape == "diamond":
        angles, radii, squash = [90 * k for k in range(4)], [radius] * 4, 0.75
    elif item.shape == "triangle":
        angles, radii, squash = [-90 + 120 * k for k in range(3)], [radius] * 3, 1.0
    else:  # star: five points, inner radius 0.45 of the outer
        angles = [-90 + 36 * k for k in range(10)]
        radii, squash = [radius if k % 2 == 0 else 0.45 * radius for k in range(10)], 1.0
    points = []
    for angle, r in zip(angles, radii):
        theta = math.radians(angle + item.angle)
        points.append((centre_x + squash * r * math.cos(theta), centre_y + r * math.sin(theta)))
    return points


def _background(scene: Scene, rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.array(_jitter(BACKGROUNDS[scene.background], rng, 12), dtype=np.float32)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    shade = direction[0] * ramp[None, :] + direction[1] * ramp[:, None]
    return base[None, None, :] + 14.0 * shade[:, :, None]


def _clutter(draw: ImageDraw.ImageDraw, scene: Scene, rng: np.random.Generator, size: int) -> None:
    base = np.array(BACKGROUNDS[scene.background], dtype=np.int64)
    for _ in range(int(rng.integers(3, 9))):
        offset = int(rng.integers(25, 45)) * (1 if base.mean() < 128 else -1)
        grey = tuple(int(v) for v in np.clip(base + offset, 0, 255))
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        if rng.random() < 0.6:
            draw.line((x0, y0, x1, y1), fill=grey, width=1)
        else:
            draw.ellipse((x0, y0, x0 + 2, y0 + 2), fill=grey)


def render(scene: Scene, size: int = RENDER_SIZE) -> Image.Image:
    rng = np.random.default_rng(scene.seed)
    canvas = Image.fromarray(np.clip(_background(scene, rng, size), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    _clutter(draw, scene, rng, size)
    # Small objects are drawn last so that a large one never hides them.
    for item in sorted(scene.items, key=lambda item: -item.radius):
        fill = _jitter(COLOURS[item.colour], rng, 18)
        if item.shape == "circle":
            r = item.radius * size
            draw.ellipse((item.x * size - r, item.y * size - r, item.x * size + r, item.y * size + r), fill=fill)
        else:
            draw.polygon(_polygon(item, size), fill=fill)
    noisy = np.asarray(canvas, dtype=np.float32) + rng.normal(0.0, 6.0, (size, size, 3)).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
