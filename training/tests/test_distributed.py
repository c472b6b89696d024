"""Training in several processes (torchrun, DistributedDataParallel), on the CPU with gloo: how batches are split,
and `train` and `distill` under torchrun with two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from capdec_toolkit.models.checkpoint import load_checkpoint
from capdec_toolkit.models.clip_models import load_clip
from capdec_toolkit.models.distributed import World
from capdec_toolkit.models.train import IGNORE, TrainOptions, batches

CAPTIONS = [
    "a red circle above a blue square.",
    "two green triangles on a grey background.",
    "a small yellow star next to a large red circle.",
    "a man standing next to a car.",
    "a dog on a beach.",
] * 3


def _captions_of(labels: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(int(token) for token in row if token != IGNORE) for row in labels]


def test_each_process_takes_its_shard_of_the_batch_a_single_process_takes(hf_clip_dir: Path) -> None:
    clip = load_clip(str(hf_clip_dir))
    options = TrainOptions(epochs=2, batch_size=4)  # 15 captions: batches of 4, 4, 4, 3 an epoch
    alone = list(batches(clip, CAPTIONS, options))
    first, second = (list(batches(clip, CAPTIONS, options, World(rank, 2))) for rank in (0, 1))
    assert len(alone) == len(first) == len(second) == 8
    for whole, a, b in zip(alone, first, second):
        assert (a.epoch, a.step) == (b.epoch, b.step) == (whole.epoch, whole.step)
        assert sorted(_captions_of(a.labels) + _captions_of(b.labels)) == sorted(_captions_of(whole.labels))
        assert len(a.labels) - len(b.labels) in (0, 1)
    # Every process draws its own noise.
    assert not torch.equal(first[0].noisy, alone[0].noisy[::2])
    # A last batch smaller than the world is left out by every process alike.
    three = [list(batches(clip, CAPTIONS[:9], TrainOptions(epochs=1, batch_size=4), World(rank, 3)))
             for rank in range(3)]
    assert [len(shards) for shards in three] == [2, 2, 2]


def test_train_and_distill_run_under_torchrun_on_two_processes(tmp_path: Path, hf_clip_dir: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CAPTIONS) + "\n")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "capdec_toolkit.cli"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    teacher, student = tmp_path / "teacher.pt", tmp_path / "student.pt"
    runs = [
        ["train", "--clip", str(hf_clip_dir), "--corpus", str(corpus), "--out", str(teacher), "--epochs", "2",
         "--gpt-layers", "2", "--gpt-heads", "2", "--gpt-width", "32", "--mapper", "mlp", "--prefix-length", "3",
         "--batch-size", "6", "--lr", "1e-3"],
        ["distill", "--teacher", str(teacher), "--clip", str(hf_clip_dir), "--corpus", str(corpus), "--out",
         str(student), "--layers", "1", "--epochs", "1", "--batch-size", "6"],
    ]
    for command, out in zip(runs, (teacher, student)):
        done = subprocess.run(torchrun + command, capture_output=True, text=True, env=environment, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        # The first process alone writes the checkpoint and says so.
        assert done.stdout.count(f"wrote {out} (trained by 2 processes)") == 1, done.stdout
    assert load_checkpoint(teacher).config.gpt.layers == 2
    assert load_checkpoint(student).config.gpt.layers == 1
