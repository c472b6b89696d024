from __future__ import annotations

from pathlib import Path

import open_clip
import torch

from capdec_toolkit.demo.scene_render import render
from capdec_toolkit.demo.scene_world import captions, sample_scenes
from capdec_toolkit.demo.small_clip import (
    CLIP_END_OF_TEXT,
    SmallClipOptions,
    build_small_clip,
    clip_token_ids,
    image_pixels,
    modality_report,
    normalise,
    save_small_clip,
    train_small_clip,
)
from capdec_toolkit.models.clip_models import load_clip

TINY = SmallClipOptions(image_size=32, patch_size=8, width=32, layers=1, heads=2, text_layers=1,
                        embedding_size=16, steps=40, batch_size=16, learning_rate=2e-3, warmup_steps=5)


def test_text_ids_end_with_the_token_hf_clip_pools_at() -> None:
    texts = ["a red circle.", "two big blue squares on a grey background."]
    ids = clip_token_ids(texts)
    full = open_clip.tokenize(texts)
    assert torch.equal(ids, full[:, : ids.shape[1]]) and not full[:, ids.shape[1] :].any()
    assert (ids.argmax(dim=1) == (ids == CLIP_END_OF_TEXT).int().argmax(dim=1)).all()
    assert build_small_clip(TINY).config.text_config.eos_token_id == CLIP_END_OF_TEXT


def test_a_tiny_clip_learns_and_loads_back_through_load_clip(tmp_path: Path) -> None:
    scenes = sample_scenes(64, seed=5, held_out=False)
    pixels = image_pixels([render(scene) for scene in scenes], TINY.image_size)
    texts = [captions(scene) for scene in scenes]
    model = build_small_clip(TINY)
    losses = train_small_clip(model, pixels, texts, TINY)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5

    save_small_clip(model, tmp_path)
    clip = load_clip(str(tmp_path))
    assert (clip.input_size, clip.embedding_size) == (TINY.image_size, TINY.embedding_size)
    with torch.no_grad():
        expected_text = model.get_text_features(input_ids=clip_token_ids(texts[0][:2]))
        expected_image = model.get_image_features(pixel_values=normalise(pixels[:2]))
        if not isinstance(expected_text, torch.Tensor):  # newer transformers return an output object
            expected_text, expected_image = expected_text.pooler_output, expected_image.pooler_output
        assert torch.allclose(clip.encode_text(texts[0][:2]), expected_text, atol=1e-5)
        assert torch.allclose(clip.image_encoder(normalise(pixels[:2])), expected_image, atol=1e-5)
    report = modality_report(clip, pixels[:8], texts[:8])
    assert report.scenes == 8 and -1 <= report.image_text_cosine <= 1 and 0 <= report.image_to_text_top1 <= 1
