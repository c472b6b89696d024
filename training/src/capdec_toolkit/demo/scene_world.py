"""A world the project can render and describe: scenes of one to three coloured shapes on a plain background.

A scene's *main object* is the one every caption names first: the only large object of a scene with several, the
object of a single-object scene, or the two twins of a `pair` scene. Held-out scenes are those whose composition
(kind and the colour/shape of every object, background and layout aside) falls in a fixed hash bucket, so no
training scene ever shows a held-out combination.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, replace
from typing import Callable, Literal

SceneKind = Literal["single", "two", "pair", "three"]
Size = Literal["large", "medium", "small"]
RGB = tuple[int, int, int]

SHAPES = ("circle", "square", "triangle", "star", "diamond")
COLOURS: dict[str, RGB] = {
    "red": (215, 35, 35),
    "green": (40, 160, 60),
    "blue": (40, 75, 215),
    "yellow": (240, 205, 40),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, RGB] = {"grey": (125, 125, 125), "black": (22, 22, 22), "white": (232, 232, 232)}
LARGE_WORDS = ("large", "big")
SMALL_WORDS = ("small", "little")
# Radii as fractions of the canvas side.
LARGE_RADIUS = (0.19, 0.24)
MEDIUM_RADIUS = (0.13, 0.16)
SMALL_RADIUS = (0.09, 0.12)
KIND_WEIGHTS: dict[SceneKind, float] = {"single": 0.25, "two": 0.35, "pair": 0.15, "three": 0.25}
HELD_OUT_PERCENT = 15
REFERENCES_PER_SCENE = 5


@dataclass(frozen=True)
class Item:
    colour: str
    shape: str
    size: Size
    x: float  # centre, fractions of the canvas side, y downwards
    y: float
    radius: float
    angle: float  # degrees of rotation, kept small so that a square never looks like a diamond


@dataclass(frozen=True)
class Scene:
    kind: SceneKind
    items: tuple[Item, ...]  # the main object first
    background: str
    seed: int  # drives the renderer's jitter, clutter and noise

    @property
    def main(self) -> Item:
        return self.items[0]

    def composition(self) -> str:
        others = sorted(f"{item.colour} {item.shape}" for item in self.items[1:])
        return "|".join([self.kind, f"{self.main.colour} {self.main.shape}", *others])


def is_held_out(scene: Scene) -> bool:
    digest = hashlib.sha256(scene.composition().encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT


def _place(rng: random.Random, radii: list[float], accept: Callable[[list[tuple[float, float]]], bool]) -> list[
    tuple[float, float]
]:
    """Centres for non-overlapping objects inside the canvas, by rejection."""
    while True:
        centres = [(rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)) for radius in radii]
        apart = all(
            math.dist(centres[i], centres[j]) > radii[i] + radii[j] + 0.04
            for i in range(len(radii))
            for j in range(i)
        )
        if apart and accept(centres):
            return centres


def _clearly_one_direction(centres: list[tuple[float, float]]) -> bool:
    # "above" or "left of" must be obvious to a reader, so one axis dominates.
    dx, dy = abs(centres[1][0] - centres[0][0]), abs(centres[1][1] - centres[0][1])
    return max(dx, dy) > 1.6 * min(dx, dy)


def _distinct_objects(rng: random.Random, count: int, background: str) -> list[tuple[str, str]]:
    chosen: list[tuple[str, str]] = []
    while len(chosen) < count:
        pick = (_object_colour(rng, background), rng.choice(SHAPES))
        if pick not in chosen:
            chosen.append(pick)
    return chosen


def _object_colour(rng: random.Random, background: str) -> str:
    return rng.choice([colour for colour in COLOURS if colour != background])


def sample_scene(rng: random.Random) -> Scene:
    kinds = list(KIND_WEIGHTS)
    kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]
    background = rng.choice(list(BACKGROUNDS))
    sizes: list[Size]
    if kind == "single":
        single_sizes: tuple[Size, Size] = ("large", "small")
        sizes = [rng.choice(single_sizes)]
        objects = _distinct_objects(rng, 1, background)
    elif kind == "pair":
        sizes = ["medium", "medium"]
        objects = _distinct_objects(rng, 1, background) * 2
    else:
        sizes = ["large", "small"] if kind == "two" else ["large", "small", "small"]
        objects = _distinct_objects(rng, len(sizes), background)
    ranges = {"large": LARGE_RADIUS, "medium": MEDIUM_RADIUS, "small": SMALL_RADIUS}
    radii = [rng.uniform(*ranges[size]) for size in sizes]
    if kind == "pair":
        radii = [radii[0]] * 2
    accept = _clearly_one_direction if kind in ("two", "pair") else (lambda centres: True)
    centres = _place(rng, radii, accept)
    items = tuple(
        Item(colour, shape, size, x, y, radius, rng.uniform(-12, 12))
        for (colour, shape), size, (x, y), radius in zip(objects, sizes, centres, radii)
    )
    return Scene(kind, items, background, rng.getrandbits(31))


def shape_sibling(scene: Scene, rng: random.Random) -> Scene | None:
    """The same scene (layout, colours, background, clutter and noise) with the main object in another shape, and
    each other object re-shaped at random: a hard negative that only its shapes tell apart. None when every
    candidate falls in the held-out split."""
    candidates = [shape for shape in SHAPES if shape != scene.main.shape]
    rng.shuffle(candidates)
    for shape in candidates:
        items = tuple(
            replace(item, shape=shape)
            if index == 0 or scene.kind == "pair"
            else replace(item, shape=rng.choice(SHAPES))
            for index, item in enumerate(scene.items)
        )
        sibling = replace(scene, items=items)
        if not is_held_out(sibling):
            return sibling
    return None


def sample_sibling_pairs(count: int, seed: int) -> list[Scene]:
    """`count` training scenes, each followed by its `shape_sibling`."""
    rng = random.Random(seed)
    scenes: list[Scene] = []
    while len(scenes) < 2 * count:
        scene = sample_scene(rng)
        sibling = None if is_held_out(scene) else shape_sibling(scene, rng)
        if sibling is not None:
            scenes += [scene, sibling]
    return scenes


def sample_scenes(count: int, seed: int, held_out: bool) -> list[Scene]:
    """`count` scenes from one side of the split, the same for the same seed."""
    rng = random.Random(seed)
    scenes: list[Scene] = []
    while len(scenes) < count:
        scene = sample_scene(rng)
        if is_held_out(scene) == held_out:
            scenes.append(scene)
    return scenes


# The grammar. Every template names the main object first, so its colour and shape are the caption's first
# colour word and first shape word (see `first_colour_and_shape`).


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(item: Item, rng: random.Random, with_size: bool) -> str:
    words = {"large": LARGE_WORDS, "small": SMALL_WORDS, "medium": ()}[item.size]
    size = f"{rng.choice(words)} " if with_size and words else ""
    return _article(f"{size}{item.colour} {item.shape}")


def relation(scene: Scene) -> str:
    """Where the main object is with respect to the second one."""
    main, other = scene.items[0], scene.items[1]
    dx, dy = other.x - main.x, other.y - main.y
    if abs(dy) >= abs(dx):
        return "above" if dy > 0 else "below"
    return "to the left of" if dx > 0 else "to the right of"


def _templates(scene: Scene, rng: random.Random) -> list[str]:
    def phrase(index: int, with_size: bool = True) -> str:
        return _noun_phrase(scene.items[index], rng, with_size)

    on_background = f"on a {scene.background} background"
    if scene.kind == "single":
        return [
            f"{phrase(0)}.",
            f"{phrase(0)} {on_background}.",
            f"{phrase(0, False)} {on_background}.",
            f"a picture of {phrase(0)}.",
            f"there is {phrase(0)} {on_background}.",
        ]
    if scene.kind == "pair":
        twins = f"{scene.main.colour} {scene.main.shape}s"
        arrangement = "one above the other" if relation(scene) in ("above", "below") else "side by side"
        return [
            f"two {twins}.",
            f"two {twins} {on_background}.",
            f"a pair of {twins}.",
            f"two {twins} {arrangement}.",
            f"two identical {twins} {on_background}.",
        ]
    if scene.kind == "two":
        where = relation(scene)
        return [
            f"{phrase(0)} {where} {phrase(1)}.",
            f"{phrase(0, False)} {where} {phrase(1, False)} {on_background}.",
            f"{phrase(0)} and {phrase(1)}.",
            f"a picture of {phrase(0)} {where} {phrase(1)}.",
            f"{phrase(0)} and {phrase(1)} {on_background}.",
        ]
    return [
        f"{phrase(0)}, {phrase(1)} and {phrase(2)}.",
        f"{phrase(0)} with {phrase(1)} and {phrase(2)}.",
        f"{phrase(0)}, {phrase(1)} and {phrase(2)} {on_background}.",
        f"a picture of {phrase(0)}, {phrase(1)} and {phrase(2)}.",
        f"{phrase(0, False)} with {phrase(1, False)} and {phrase(2, False)} {on_background}.",
    ]


def captions(scene: Scene, count: int = REFERENCES_PER_SCENE) -> list[str]:
    """`count` different descriptions of the scene, the same every time for the same scene."""
    rng = random.Random(scene.seed)
    templates = _templates(scene, rng)
    return rng.sample(templates, min(count, len(templates)))


def first_colour_and_shape(caption: str) -> tuple[str | None, str | None]:
    """The first object-colour word and the first shape word (singular or plural) of a caption."""
    words = caption.lower().replace(",", " ").replace(".", " ").split()
    colour = next((word for word in words if word in COLOURS), None)
    shape = next((word.removesuffix("s") for word in words if word.removesuffix("s") in SHAPES), None)
    return colour, shape


def names_main_object(caption: str, scene: Scene) -> bool:
    return first_colour_and_shape(caption) == (scene.main.colour, scene.main.shape)
