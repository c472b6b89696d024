from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from capdec_toolkit.cli import main
from capdec_toolkit.export.export import ExportOptions, export_bundle
from capdec_toolkit.export.vocabulary import corpus_token_ids
from capdec_toolkit.models.checkpoint import CapDecConfig, CapDecModel, load_checkpoint
from capdec_toolkit.models.clip_models import load_clip
from capdec_toolkit.models.distill import DistillError, DistillOptions, distill, make_student, teacher_layers
from capdec_toolkit.models.gpt2 import Gpt2Config
from capdec_toolkit.models.mapper import MapperConfig
from capdec_toolkit.models.train import TrainOptions, train
from capdec_toolkit.reference.tokenizer import END_OF_TEXT_ID, PERIOD_ID

CAPTIONS = [
    "a red circle above a blue square.",
    "two green triangles on a grey background.",
    "a small yellow star next to a large red circle.",
    "a man standing next to a car.",
] * 4


def tiny_teacher(layers: int = 4) -> CapDecModel:
    torch.manual_seed(7)  # not the students' seed (DistillOptions' default 0): a random student must differ
    mapper = MapperConfig("mlp", 32, 32, prefix_length=3)
    return CapDecModel(CapDecConfig(mapper, Gpt2Config(layers, 2, 32, 50257, 64)))


def test_the_student_starts_from_every_other_teacher_block() -> None:
    assert teacher_layers(12, 6) == [0, 2, 4, 6, 8, 10]
    assert teacher_layers(4, 1) == [0]
    assert teacher_layers(4, 4) == [0, 1, 2, 3]
    teacher = tiny_teacher()
    student = make_student(teacher, DistillOptions(layers=2))
    assert student.config.gpt.layers == 2 and student.config.gpt.width == 32
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    for key, value in student_state.items():
        source = key.replace("gpt.transformer.h.1.", "gpt.transformer.h.2.")
        assert torch.equal(value, teacher_state[source]), key
    random = make_student(teacher, DistillOptions(layers=2, init="random"))
    assert not torch.equal(random.state_dict()["gpt.transformer.h.0.mlp.c_fc.weight"],
                           teacher_state["gpt.transformer.h.0.mlp.c_fc.weight"])
    assert torch.equal(random.state_dict()["clip_project.model.0.weight"], teacher_state["clip_project.model.0.weight"])


def test_students_that_cannot_be_made_are_refused_with_the_option_to_change() -> None:
    teacher = tiny_teacher()
    with pytest.raises(DistillError, match="a student of 5 layers from a teacher of 4: --layers must be 1 to 4"):
        make_student(teacher, DistillOptions(layers=5))
    with pytest.raises(DistillError, match="--layers must be 1 to 4"):
        make_student(teacher, DistillOptions(layers=0))
    with pytest.raises(DistillError, match="a student of width 16 cannot start from a teacher of width 32: use --init random"):
        make_student(teacher, DistillOptions(layers=2, width=16))
    with pytest.raises(DistillError, match="prefix of width 32, the student's is 16: use --mapper train"):
        make_student(teacher, DistillOptions(layers=2, width=16, init="random"))
    with pytest.raises(DistillError, match="width of 16 is not divisible by 3 heads"):
        make_student(teacher, DistillOptions(layers=2, width=16, heads=3, init="random", mapper="train"))
    narrow = make_student(teacher, DistillOptions(layers=2, width=16, heads=2, init="random", mapper="train"))
    assert narrow.config.gpt.width == 16 and narrow.config.mapper.width == 16


def test_distilling_brings_the_student_closer_to_its_teacher(hf_clip_dir: Path) -> None:
    clip = load_clip(str(hf_clip_dir))
    teacher = tiny_teacher()
    train(clip, teacher, CAPTIONS, TrainOptions(epochs=2, batch_size=8, learning_rate=3e-3))
    # A few steps leave a tiny teacher's distributions nearly flat over 50,257 tokens, where any student is close to
    # it: scaled logits make it confident, as a trained teacher is.
    with torch.no_grad():
        teacher.gpt.transformer.ln_f.weight.mul_(8.0)
    teacher_before = {key: value.clone() for key, value in teacher.state_dict().items()}
    # A student at random (one from the teacher's own blocks starts too close to an undertrained teacher to show it).
    options = DistillOptions(layers=1, init="random", training=TrainOptions(epochs=6, batch_size=8, learning_rate=3e-3))
    student = make_student(teacher, options)
    divergences = distill(clip, teacher, student, CAPTIONS, options)
    assert len(divergences) == 12
    assert sum(divergences[-4:]) / 4 < 0.8 * sum(divergences[:4]) / 4, divergences
    assert all(torch.equal(teacher.state_dict()[key], value) for key, value in teacher_before.items())
    # The mapper was copied and kept.
    assert torch.equal(student.state_dict()["clip_project.model.0.weight"], teacher_before["clip_project.model.0.weight"])


def test_distilling_over_a_caption_vocabulary_trains_its_rows_only(hf_clip_dir: Path, tmp_path: Path) -> None:
    clip = load_clip(str(hf_clip_dir))
    teacher = tiny_teacher()
    train(clip, teacher, CAPTIONS, TrainOptions(epochs=2, batch_size=8, learning_rate=3e-3))
    with torch.no_grad():
        teacher.gpt.transformer.ln_f.weight.mul_(8.0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CAPTIONS) + "\n")
    vocabulary = tuple(corpus_token_ids(corpus, [END_OF_TEXT_ID, PERIOD_ID]))
    options = DistillOptions(layers=1, init="random", vocabulary=vocabulary,
                             training=TrainOptions(epochs=6, batch_size=8, learning_rate=3e-3))
    student = make_student(teacher, options)
    table_before = student.gpt.transformer.wte.weight.detach().clone()
    divergences = distill(clip, teacher, student, CAPTIONS, options)
    assert sum(divergences[-4:]) / 4 < 0.8 * sum(divergences[:4]) / 4, divergences
    table = student.gpt.transformer.wte.weight.detach()
    others = torch.ones(table.shape[0], dtype=torch.bool)
    others[list(vocabulary)] = False
    # Rows outside the vocabulary get no gradient: only AdamW's weight decay (0.01) moves them, 12 steps of it.
    decayed = table_before[others] * (1 - 3e-3 * 0.01) ** len(divergences)
    assert torch.allclose(table[others], decayed, rtol=1e-5, atol=0)
    assert not torch.allclose(table[~others], table_before[~others] * (1 - 3e-3 * 0.01) ** len(divergences))
    # A caption vocabulary from another corpus lacks this one's tokens.
    narrow = replace(options, vocabulary=(END_OF_TEXT_ID, PERIOD_ID))
    with pytest.raises(DistillError, match="caption token .* is not in the caption vocabulary"):
        distill(clip, teacher, make_student(teacher, narrow), CAPTIONS, narrow)


def test_the_distill_command_writes_a_checkpoint_that_export_takes(tmp_path: Path, hf_clip_dir: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CAPTIONS) + "\n")
    teacher = tmp_path / "teacher.pt"
    assert main(["train", "--clip", str(hf_clip_dir), "--corpus", str(corpus), "--out", str(teacher), "--epochs", "1",
                 "--gpt-layers", "2", "--gpt-heads", "2", "--gpt-width", "32", "--mapper", "mlp",
                 "--prefix-length", "3", "--batch-size", "8"]) == 0
    student = tmp_path / "student.pt"
    common = ["distill", "--teacher", str(teacher), "--clip", str(hf_clip_dir), "--corpus", str(corpus),
              "--out", str(student), "--epochs", "1", "--batch-size", "8"]
    assert main([*common, "--layers", "1", "--vocabulary", str(corpus)]) == 0
    model = load_checkpoint(student)
    assert model.config.gpt.layers == 1
    bundle = export_bundle(load_clip(str(hf_clip_dir)), model, tmp_path / "bundle", ExportOptions("s", "s", 6))
    assert bundle.manifest["decoder"]["layers"] == 1
    assert main([*common, "--layers", "3"]) == 1
    assert main([*common, "--layers", "1", "--teacher", str(tmp_path / "missing.pt")]) == 1
