"""The side-by-side benchmark's own parts, on a tiny model (the real sizes are for BENCHMARKS.md, not tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from capdec_toolkit.bench.benchmark import (
    STAGES,
    BenchSettings,
    capdec_reference_caption,
    fixed_length,
    format_kernels,
    kernels_here,
    onnxruntime_stages,
)
from capdec_toolkit.bench.realsize import RealSize, generate, source_folder
from capdec_toolkit.models.checkpoint import load_checkpoint
from capdec_toolkit.models.mapper import MapperConfig
from capdec_toolkit.reference.bundle import Bundle
from capdec_toolkit.reference.preprocess import load_rgb
from capdec_toolkit.reference.reference import OrtCaptioner

from conftest import TINY_GPT



@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """ViT-B/32 at its real size (the benchmark's image tower) before a tiny mapper and GPT-2."""
    tiny = RealSize("tiny", "vit-b-32", MapperConfig("mlp", 512, 32, prefix_length=3), TINY_GPT, "tiny")
    return generate(tiny, tmp_path_factory.mktemp("realsize") / "tiny")


def test_capdec_cacheless_decoding_equals_cached_beam_search(bundle: Bundle, photos: list[Path]) -> None:
    """CapDec's reference decoding (whole sequence re-run per step) and the bundle's cached decoder with the
    documented beam search pick the same tokens: the speed-up compares the same work."""
    settings = BenchSettings(tokens=6)
    captioner = OrtCaptioner(bundle, "fp32")
    result = captioner.embed(photos[0])
    cached, _, _ = captioner.caption(result.prefix, fixed_length(settings, 5))
    model = load_checkpoint(next(source_folder(bundle.folder).glob("*.pt")))
    reference = capdec_reference_caption(model, torch.from_numpy(result.prefix), 5, settings.tokens)
    assert cached == reference


def test_onnxruntime_stages_time_every_stage(bundle: Bundle, photos: list[Path]) -> None:
    settings = BenchSettings(runs=2, warmup=1, tokens=3)
    stages = onnxruntime_stages(bundle, "int8", 1, load_rgb(photos[0]), settings)
    assert list(stages) == list(STAGES)
    for timing in stages.values():
        assert 0 < timing["median_ms"] <= timing["p90_ms"]


def test_the_kernel_table_sets_every_kernel_beside_onnxruntime() -> None:
    settings = BenchSettings(runs=1, warmup=0, tokens=2, threads=(1, 2))

    def report(ms_at_one: float) -> dict:
        return {"threads": [{"threads": t, "stages": [{"stage": s, "median_ms": ms_at_one / t} for s in STAGES]}
                            for t in settings.threads]}

    result = {
        "bundle": "b",
        "kernels": {"tract": report(8.0), "avx2": report(2.0)},
        "onnxruntime": {t: {s: {"median_ms": 4.0} for s in STAGES} for t in settings.threads},
    }
    table = format_kernels(result, settings)
    assert "| decoder token step | 8.00 | 2.00 | 4.00 | 2.00 | 0.50 |" in table
    assert "| decoder token step | 4.00 | 1.00 | 4.00 | 1.00 | 0.25 |" in table
    assert "| caption beam | 0.50 | 0.50 |" in table


def test_the_default_kernels_are_those_the_cpu_flags_allow(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx_vnni\n")
    assert kernels_here(cpuinfo) == ["avx-vnni", "avx2"]
    cpuinfo.write_text("flags\t\t: fpu sse2 avx\n")
    assert kernels_here(cpuinfo) == []
