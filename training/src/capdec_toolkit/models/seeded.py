"""Random weights that come out as the same bits on every CPU, for the fixture and the real-size bundles, whose
files are checked by hash.

torch's own initialisers do not: `normal_` runs a vectorised Box-Muller on AVX2 CPUs and a scalar one elsewhere
(aarch64, or `ATEN_CPU_CAPABILITY=default`), whose logarithms and cosines round differently, so the same seed gave
other weights and other bundle hashes. Here the randomness is integers (numpy's PCG64, specified bit for bit) and
the arithmetic is exactly rounded additions and multiplications, which every CPU computes alike."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

# Irwin-Hall: the sum of 12 uniforms on [0, 1) has mean 6 and variance 1, close to a standard normal.
_UNIFORMS_PER_SAMPLE = 12


def seeded_normal(shape: torch.Size, std: float, rng: np.random.Generator) -> torch.Tensor:
    """Approximately normal float32 samples with mean 0 and `std`, from `rng` alone."""
    total = rng.random(tuple(shape))
    for _ in range(_UNIFORMS_PER_SAMPLE - 1):
        total += rng.random(tuple(shape))
    return torch.from_numpy(((total - _UNIFORMS_PER_SAMPLE / 2) * std).astype(np.float32))


def measured_std(parameter: torch.Tensor) -> float:
    """The spread torch's initialiser gave `parameter`, to two significant digits: enough to keep each layer's
    scale, and coarse enough that the last-bit differences between CPUs' initialisers do not show."""
    return float(f"{parameter.detach().double().std().item():.2g}")


StdRule = Callable[[nn.Module, str, nn.Parameter], float]


def reseed_(model: nn.Module, seed: int, std: StdRule = lambda module, name, parameter: measured_std(parameter)) -> None:
    """Replaces every parameter of `model` that is not a constant (LayerNorm gains of one and zero biases stay) by
    seeded normal values of the spread `std` gives it. Tied parameters are replaced once, and stay tied."""
    rng = np.random.Generator(np.random.PCG64(seed))
    seen: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                if id(parameter) in seen or parameter.numel() == 0:
                    continue
                seen.add(id(parameter))
                if bool(torch.all(parameter == parameter.reshape(-1)[0])):
                    continue
                parameter.copy_(seeded_normal(parameter.shape, std(module, name, parameter), rng))
