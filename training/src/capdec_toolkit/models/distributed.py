"""Several processes, one model: `torchrun --nproc_per_node N -m capdec_toolkit.cli train|distill ...` runs the
command in N processes (one per GPU with `--device cuda`; on the CPU, N workers) that train one model with
DistributedDataParallel. Each step's batch is the one a single process would take, split between the processes;
their gradients are averaged, so the replicas stay identical, and only the first process shows progress and writes
the checkpoint. Without torchrun's environment everything runs as one process, unchanged."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: list[int]) -> list[int]:
        """This process's part of a batch: every size-th item from its rank on."""
        return batch[self.rank :: self.size]

    def device(self, device: str) -> str:
        """`cuda` is this process's own GPU under torchrun (its local rank)."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.size > 1 else device

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as its forward pass must be called for the processes' gradients to be averaged."""
        if self.size == 1:
            return model
        on_gpu = next(model.parameters()).is_cuda
        return DistributedDataParallel(model, device_ids=[self.local_rank] if on_gpu else None)


def _from_environment() -> World:
    """torchrun's RANK, WORLD_SIZE and LOCAL_RANK; one process without them."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                 int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def joined(device: str) -> Iterator[World]:
    """The processes torchrun started, joined for the duration (NCCL between GPUs, gloo on the CPU)."""
    world = _from_environment()
    if world.size == 1:
        yield world
        return
    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        yield world
    finally:
        dist.destroy_process_group()
