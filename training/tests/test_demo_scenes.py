"""The committed outputs of `capdec-toolkit demo`: the held-out scenes the Rust test reads."""

from __future__ import annotations

import json

from capdec_toolkit.scene_world import COLOURS, SHAPES, first_colour_and_shape

from conftest import REPO

SCENES = REPO / "tests" / "data" / "demo-scenes"


def test_shipped_scenes_have_references_that_name_their_main_object() -> None:
    references = json.loads((SCENES / "references.json").read_text())
    assert len(references) >= 50
    for name, scene in references.items():
        assert (SCENES / name).is_file()
        assert scene["main_colour"] in COLOURS and scene["main_shape"] in SHAPES
        for text in scene["references"]:
            assert first_colour_and_shape(text) == (scene["main_colour"], scene["main_shape"])
    assert sum(path.stat().st_size for path in SCENES.iterdir()) < 4_000_000


def test_the_demo_command_runs_the_recipe_by_default() -> None:
    from capdec_toolkit.cli import parser
    from capdec_toolkit.demo import DEMO_CLIP, DEMO_TRAIN_SCENES, DecoderOptions

    args = parser().parse_args(["demo", "--out", "bundle", "--work", "work"])
    assert args.clip_steps == DEMO_CLIP.steps and args.train_scenes == DEMO_TRAIN_SCENES
    assert args.mapper == DecoderOptions().mapper and args.decoder_epochs == DecoderOptions().training.epochs
