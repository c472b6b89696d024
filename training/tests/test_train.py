from __future__ import annotations

from pathlib import Path

import pytest
import torch

from capdec_toolkit.cli import main
from capdec_toolkit.models.checkpoint import CapDecConfig, CapDecModel, load_checkpoint
from capdec_toolkit.models.clip_models import load_clip
from capdec_toolkit.models.gpt2 import Gpt2Config
from capdec_toolkit.models.mapper import MapperConfig
from capdec_toolkit.models.train import CorpusError, TrainOptions, inject_noise, read_corpus, train

CAPTIONS = [
    "a red circle above a blue square",
    "two green triangles on a grey background",
    "a small yellow star next to a large red circle",
    "a man standing next to a car",
] * 4


def test_noise_has_the_requested_variance_and_output_is_unit_length() -> None:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(4000, 512, generator=generator) * 3.0
    variance = 0.016
    noisy = inject_noise(embeddings, variance, torch.Generator().manual_seed(1))
    assert torch.allclose(noisy.norm(dim=-1), torch.ones(4000), atol=1e-5)
    # Undo the final normalisation to see the noise that was added to the normalised embedding.
    normalised = torch.nn.functional.normalize(embeddings, dim=-1)
    scale = (normalised + torch.randn(4000, 512, generator=torch.Generator().manual_seed(1)) * variance**0.5).norm(
        dim=-1, keepdim=True
    )
    noise = noisy * scale - normalised
    assert abs(noise.mean().item()) < 1e-3
    assert noise.var().item() == pytest.approx(variance, rel=0.02)
    assert inject_noise(embeddings, 0.0).sub(normalised).abs().max() < 1e-6


def test_training_a_few_steps_lowers_the_loss(hf_clip_dir: Path) -> None:
    clip = load_clip(str(hf_clip_dir))
    for kind in ("mlp", "transformer"):
        torch.manual_seed(0)
        mapper = MapperConfig(kind, 32, 32, prefix_length=4, clip_length=4, layers=1, heads=4)  # type: ignore[arg-type]
        model = CapDecModel(CapDecConfig(mapper, Gpt2Config(2, 2, 32, 50257, 64)))
        options = TrainOptions(epochs=12, batch_size=8, learning_rate=3e-3)
        losses = train(clip, model, [caption + "." for caption in CAPTIONS], options)
        assert len(losses) == 24
        assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4


def test_frozen_gpt_keeps_its_weights(hf_clip_dir: Path) -> None:
    clip = load_clip(str(hf_clip_dir))
    mapper = MapperConfig("mlp", 32, 32, prefix_length=2)
    model = CapDecModel(CapDecConfig(mapper, Gpt2Config(1, 2, 32, 50257, 64)))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    train(clip, model, CAPTIONS, TrainOptions(epochs=1, batch_size=8, learning_rate=1e-2, freeze_gpt=True))
    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items() if key.startswith("gpt."))
    assert not torch.equal(after["clip_project.model.0.weight"], before["clip_project.model.0.weight"])


def test_corpus_errors_name_the_line(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"a dog.\n\na cat\n")
    with pytest.raises(CorpusError, match=r"corpus.txt:2: empty caption"):
        read_corpus(corpus, 40)
    corpus.write_bytes(b"a dog.\na \xff cat\n")
    with pytest.raises(CorpusError, match=r"corpus.txt:2: not UTF-8"):
        read_corpus(corpus, 40)
    corpus.write_bytes(b"a dog.\n" + b"word " * 100 + b"\n")
    with pytest.raises(CorpusError, match=r"corpus.txt:2: caption longer than 40"):
        read_corpus(corpus, 40)
    corpus.write_bytes(b"a dog\na cat.\n")
    assert read_corpus(corpus, 40) == ["a dog.", "a cat."]
    with pytest.raises(CorpusError, match="missing.txt: cannot read corpus"):
        read_corpus(tmp_path / "missing.txt", 40)


def test_train_cli_writes_a_loadable_capdec_checkpoint(tmp_path: Path, hf_clip_dir: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CAPTIONS) + "\n")
    out = tmp_path / "demo_prefix-000.pt"
    args = ["train", "--clip", str(hf_clip_dir), "--corpus", str(corpus), "--out", str(out), "--epochs", "1",
            "--gpt-layers", "1", "--gpt-heads", "2", "--gpt-width", "32", "--mapper", "mlp", "--prefix-length", "3",
            "--batch-size", "8"]
    assert main(args) == 0
    state = torch.load(out, weights_only=True)
    assert "clip_project.model.0.weight" in state and "gpt.transformer.h.0.attn.c_attn.weight" in state
    assert load_checkpoint(out).config.mapper.prefix_length == 3
    corpus.write_text("fine\n\n")
    assert main(args) == 1
