from __future__ import annotations

import numpy as np

from capdec_toolkit.demo.scene_render import RENDER_SIZE, render
from capdec_toolkit.demo.scene_world import (
    COLOURS,
    REFERENCES_PER_SCENE,
    SHAPES,
    captions,
    first_colour_and_shape,
    is_held_out,
    names_main_object,
    relation,
    sample_scenes,
    sample_sibling_pairs,
)


def test_the_same_seed_gives_the_same_scenes_pictures_and_captions() -> None:
    first, second = sample_scenes(20, seed=7, held_out=False), sample_scenes(20, seed=7, held_out=False)
    assert first == second
    assert [captions(scene) for scene in first] == [captions(scene) for scene in second]
    assert all(np.array_equal(np.asarray(render(a)), np.asarray(render(b))) for a, b in zip(first[:5], second[:5]))
    assert sample_scenes(20, seed=8, held_out=False) != first


def test_held_out_compositions_never_appear_in_training_scenes() -> None:
    training = sample_scenes(2000, seed=1, held_out=False)
    held_out = sample_scenes(300, seed=2, held_out=True)
    assert not any(is_held_out(scene) for scene in training)
    assert all(is_held_out(scene) for scene in held_out)
    assert not {scene.composition() for scene in training} & {scene.composition() for scene in held_out}
    # Every kind of scene is tested, and the test set's words are all known from training.
    assert {scene.kind for scene in held_out} == {"single", "two", "pair", "three"}


def test_every_caption_names_the_main_object_first() -> None:
    for scene in sample_scenes(300, seed=3, held_out=True):
        texts = captions(scene)
        assert len(set(texts)) == REFERENCES_PER_SCENE
        assert all(names_main_object(text, scene) for text in texts), texts
        if scene.kind in ("two", "three"):
            assert scene.main.size == "large" and all(item.size == "small" for item in scene.items[1:])
        if scene.kind == "pair":
            assert scene.items[0].colour == scene.items[1].colour and scene.items[0].shape == scene.items[1].shape


def test_main_object_words_are_read_from_a_caption() -> None:
    assert first_colour_and_shape("Two green triangles on a white background.") == ("green", "triangle")
    assert first_colour_and_shape("a big white star, a small red circle") == ("white", "star")
    assert first_colour_and_shape("a picture of nothing") == (None, None)
    assert set(COLOURS) >= {"red", "green", "blue"} and "circle" in SHAPES


def test_relations_follow_the_layout_and_pictures_show_the_main_colour() -> None:
    for scene in sample_scenes(100, seed=4, held_out=False):
        image = np.asarray(render(scene), dtype=np.int64)
        assert image.shape == (RENDER_SIZE, RENDER_SIZE, 3)
        main = scene.main
        centre = image[int(main.y * RENDER_SIZE), int(main.x * RENDER_SIZE)]
        # Pixel noise and colour jitter aside, the main object's centre has its colour (stars' centres are filled).
        assert np.abs(centre - np.array(COLOURS[main.colour])).max() < 50
        if scene.kind == "two":
            other = scene.items[1]
            expected = {"above": other.y > main.y, "below": other.y < main.y,
                        "to the left of": other.x > main.x, "to the right of": other.x < main.x}
            assert expected[relation(scene)]


def test_shape_siblings_differ_only_in_shapes_and_stay_in_training() -> None:
    scenes = sample_sibling_pairs(200, seed=6)
    assert len(scenes) == 400
    for scene, sibling in zip(scenes[::2], scenes[1::2]):
        assert not is_held_out(scene) and not is_held_out(sibling)
        assert sibling.main.shape != scene.main.shape
        assert (sibling.kind, sibling.background, sibling.seed) == (scene.kind, scene.background, scene.seed)
        for item, twin in zip(scene.items, sibling.items):
            assert (item.colour, item.size, item.x, item.y, item.radius) == (
                twin.colour, twin.size, twin.x, twin.y, twin.radius
            )
        if scene.kind == "pair":
            assert sibling.items[0].shape == sibling.items[1].shape
        assert all(names_main_object(text, sibling) for text in captions(sibling))
