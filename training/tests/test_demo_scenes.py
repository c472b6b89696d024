"""The committed outputs of `capdec-toolkit demo`: the held-out scenes the Rust test reads, and the recipe they
came from."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict
from typing import Any


from capdec_toolkit.demo.scene_world import COLOURS, SHAPES, captions, first_colour_and_shape, sample_scenes

from conftest import REPO

SCENES = REPO / "tests" / "data" / "demo-scenes"
# The recipe that made the committed models/demo, written out rather than read from the code that
# runs it, so that a changed default cannot pass unnoticed: what its bundle.toml, docs/demo-model.md and test scenes
# record (checked below), and for the rest the values that run used.
RECIPE: dict[str, Any] = {
    "seed": 20261127,
    "train_scenes": 40000,
    "decoder_captions": 20000,
    "eval_scenes": 150,
    "shipped_scenes": 150,
    "variances": (0.0, 0.001, 0.016, 0.1),
    "clip": {
        "image_size": 32, "patch_size": 4, "width": 96, "layers": 6, "heads": 4, "text_layers": 2,
        "embedding_size": 128, "steps": 4500, "batch_size": 128, "learning_rate": 1e-3, "warmup_steps": 100,
        "initial_temperature": 0.01, "sibling_pairs": True, "seed": 20261127,
    },
    "decoder": {
        "mapper": "mlp", "prefix_length": 10, "mapper_layers": 4, "mapper_heads": 4, "layers": 4, "heads": 2,
        "width": 32,
        "training": {
            "epochs": 2, "batch_size": 32, "learning_rate": 2e-3, "freeze_gpt": False, "max_caption_tokens": 40,
            "device": "cpu",
        },
    },
    "students": (
        {"layers": 2, "init": "teacher", "mapper": "copy", "epochs": None},
        {"layers": 1, "init": "teacher", "mapper": "copy", "epochs": None},
        {"layers": 1, "init": "teacher", "mapper": "train", "epochs": 4},
        {"layers": 1, "init": "random", "mapper": "train", "epochs": 4},
    ),
}


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
    """A default changed in the CLI or in demo/demo.py fails here until models/demo is made again with it."""
    from capdec_toolkit.cli import demo_options, parser

    options = asdict(demo_options(parser().parse_args(["demo"])))
    for path in ("out", "work", "docs", "scenes", "examples", "capdec"):
        del options[path]
    for per_decoder in ("noise_variance", "seed"):  # run_demo sets these for each decoder it trains
        del options["decoder"]["training"][per_decoder]
    assert options == RECIPE


def test_the_recipe_is_what_the_committed_demo_model_records() -> None:
    clip, decoder, training = RECIPE["clip"], RECIPE["decoder"], RECIPE["decoder"]["training"]
    manifest = tomllib.loads((REPO / "models" / "demo" / "bundle.toml").read_text())
    assert (manifest["encoder"]["input_size"], manifest["encoder"]["embedding_size"]) == (
        clip["image_size"], clip["embedding_size"]
    )
    assert (manifest["mapper"]["kind"], manifest["mapper"]["prefix_length"]) == (
        decoder["mapper"], decoder["prefix_length"]
    )
    # The default is the teacher or one of its students.
    assert manifest["decoder"]["layers"] in (decoder["layers"], *(student["layers"] for student in RECIPE["students"]))
    assert (manifest["decoder"]["heads"], manifest["decoder"]["width"]) == (decoder["heads"], decoder["width"])
    assert (
        f"ViT {clip['image_size']} px / patch {clip['patch_size']}, width {clip['width']}, {clip['layers']} layers, "
        f"{clip['embedding_size']}-d) trained contrastively on {RECIPE['train_scenes']} scenes"
    ) in manifest["description"]

    page = " ".join((REPO / "docs" / "demo-model.md").read_text().split())
    assert f"{clip['text_layers']}-layer text tower" in page
    assert f"{clip['steps']} steps of {clip['batch_size']} scenes" in page
    epochs, batch, rate = training["epochs"], training["batch_size"], training["learning_rate"]
    assert f"({epochs} epochs, batch {batch}, learning rate {rate:g})" in page
    assert f"All evaluation uses {RECIPE['eval_scenes']} held-out scenes" in page
    assert all(f"| {variance:g} | " in page for variance in RECIPE["variances"])

    # run_demo samples the held-out scenes with the seed after the recipe's, and ships the first of them.
    scenes = sample_scenes(RECIPE["eval_scenes"], RECIPE["seed"] + 1, held_out=True)[: RECIPE["shipped_scenes"]]
    references = json.loads((SCENES / "references.json").read_text())
    assert [scene["references"] for scene in references.values()] == [captions(scene) for scene in scenes]


def test_the_default_is_the_smallest_bundle_that_keeps_both_bars() -> None:
    from capdec_toolkit.demo.demo import choose_default
    from capdec_toolkit.demo.demo_report import DecoderRow
    from capdec_toolkit.reference.metrics import CaptionScores

    def row(name: str, megabytes: float, cider_d: float, main_object: float, layers: int = 1) -> DecoderRow:
        return DecoderRow(name, layers, 32, 51, 1000 * layers, int(megabytes * 1e6), 1.0,
                          CaptionScores(0.5, 0.7, cider_d, 150), main_object, None)

    teacher = row("teacher", 21.7, 3.00, 0.93, layers=4)
    pruned_teacher = row("teacher, caption vocabulary", 4.6, 3.00, 0.93, layers=4)
    misses_cider = row("loses 6 points", 4.2, 2.94, 0.95)
    misses_main_object = row("names 89% right", 1.1, 3.10, 0.89)
    wide = row("keeps both", 1.3, 2.96, 0.90)
    assert choose_default([teacher, pruned_teacher, misses_cider, misses_main_object, wide]) == wide
    assert choose_default([teacher, pruned_teacher, misses_cider, misses_main_object]) == pruned_teacher
    weak_teacher = row("teacher under the bar", 21.7, 3.0, 0.5)
    assert choose_default([weak_teacher, misses_main_object]) == weak_teacher
