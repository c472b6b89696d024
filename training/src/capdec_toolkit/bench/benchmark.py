"""The side-by-side benchmark: the same real-size bundles, inputs and thread counts through tract (`capdec
bench`), onnxruntime, and CapDec's own way of decoding (PyTorch fp32, beam search re-running GPT-2 over the whole
sequence at every step), in one session, so that ratios measured side by side are what the targets speak of."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..export.export import drift_report
from ..models.checkpoint import CapDecModel, load_checkpoint
from ..models.clip_models import load_clip
from ..reference.bundle import Bundle
from ..reference.decoding import SearchRules
from ..reference.preprocess import load_rgb, preprocess
from ..reference.reference import OrtCaptioner, OrtStepper
from .realsize import source_folder

KERNEL_VARIABLE = "CAPDEC_INT8_KERNEL"
STAGES = (
    "preprocess",
    "encode",
    "map",
    "decoder prefix step",
    "decoder token step",
    "decoder beam step",
    "caption greedy",
    "caption beam",
    "decode beam",
)


@dataclass(frozen=True)
class BenchSettings:
    runs: int = 20
    warmup: int = 3
    tokens: int = 20
    beam_size: int = 5
    threads: tuple[int, ...] = (1, 2)


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[round((len(ordered) - 1) * 0.9)],
    }


def _repeat(settings: BenchSettings, run: Callable[[], list[float]]) -> dict[str, float]:
    for _ in range(settings.warmup):
        run()
    samples: list[float] = []
    for _ in range(settings.runs):
        samples += run()
    return _stats(samples)


def _timed(work: Callable[[], object]) -> list[float]:
    start = time.perf_counter()
    work()
    return [(time.perf_counter() - start) * 1e3]


def fixed_length(settings: BenchSettings, beam_size: int) -> SearchRules:
    """Nothing ends a caption early, as in `capdec bench`."""
    return SearchRules(beam_size, settings.tokens, (), end_of_text_id=-1)


def onnxruntime_stages(
    bundle: Bundle, precision: str, threads: int, image: Image.Image, settings: BenchSettings
) -> dict[str, dict[str, float]]:
    captioner = OrtCaptioner(bundle, precision, threads)
    pixels = captioner.pixels(image)
    embedded = captioner.embed_pixels(pixels)

    def token_steps(rows: int) -> list[float]:
        stepper = OrtStepper(captioner, embedded.prefix)
        token = int(np.argmax(stepper.start()[0]))
        samples = []
        sources = [0] * rows
        for _ in range(settings.tokens):
            samples += _timed(lambda: stepper.step(sources, [token] * rows))
            sources = list(range(rows))
        return samples

    def caption(beam_size: int) -> None:
        result = captioner.embed_pixels(captioner.pixels(image))
        captioner.caption(result.prefix, fixed_length(settings, beam_size))

    work: dict[str, Callable[[], list[float]]] = {
        "preprocess": lambda: _timed(lambda: captioner.pixels(image)),
        "encode": lambda: _timed(lambda: captioner.encoder.run(None, {"pixel_values": pixels})),
        "map": lambda: _timed(lambda: captioner.mapper.run(None, {"clip_embedding": embedded.embedding[None]})),
        "decoder prefix step": lambda: _timed(lambda: OrtStepper(captioner, embedded.prefix).start()),
        "decoder token step": lambda: token_steps(1),
        "decoder beam step": lambda: token_steps(settings.beam_size),
        "caption greedy": lambda: _timed(lambda: caption(1)),
        "caption beam": lambda: _timed(lambda: caption(settings.beam_size)),
        "decode beam": lambda: _timed(lambda: captioner.caption(embedded.prefix,
                                                                fixed_length(settings, settings.beam_size))),
    }
    return {stage: _repeat(settings, work[stage]) for stage in STAGES}


@torch.no_grad()
def capdec_reference_caption(model: CapDecModel, prefix: torch.Tensor, beam_size: int, tokens: int) -> list[int]:
    """CapDec's generate_beam, as its repository decodes: no key/value cache, so every step runs GPT-2 over the
    prefix and every token so far, for every beam."""
    wte = model.gpt.transformer.wte
    generated = prefix
    scores: torch.Tensor | None = None
    sequences = torch.empty(0)
    for _ in range(tokens):
        log_probs = model.gpt.sequence_logits(generated)[:, -1, :].log_softmax(-1)
        if scores is None:
            scores, next_tokens = log_probs[0].topk(beam_size)
            generated = generated.expand(beam_size, *generated.shape[1:])
            sequences = next_tokens[:, None]
        else:
            length = sequences.shape[1] + 1
            flat = ((scores[:, None] + log_probs) / length).view(-1)
            average, picked = flat.topk(beam_size)
            source = picked // log_probs.shape[1]
            next_tokens = picked % log_probs.shape[1]
            sequences = torch.cat([sequences[source], next_tokens[:, None]], dim=1)
            generated = generated[source]
            scores = average * length
        generated = torch.cat([generated, wte(next_tokens)[:, None, :]], dim=1)
    assert scores is not None
    return sequences[int(scores.argmax())].tolist()


def pytorch_caption_ms(bundle: Bundle, image: Image.Image, threads: int, settings: BenchSettings) -> dict[str, float]:
    """Whole caption, beam search, fp32, CapDec's way: image tower, normalise, mapper, cache-less beam search."""
    source = source_folder(bundle.folder)
    clip = load_clip(str(source / "clip"))
    model = load_checkpoint(next(source.glob("*.pt")))
    torch.set_num_threads(threads)

    def caption() -> None:
        with torch.no_grad():
            pixels = torch.from_numpy(preprocess(image, clip.input_size, clip.mean, clip.std))
            embedding = clip.image_encoder(pixels)
            embedding = embedding / embedding.norm(dim=-1, keepdim=True)
            capdec_reference_caption(model, model.clip_project(embedding), settings.beam_size, settings.tokens)

    # CapDec's decoding is slow enough that a few runs give a stable median.
    few = BenchSettings(runs=max(3, settings.runs // 5), warmup=1, tokens=settings.tokens, beam_size=settings.beam_size)
    return _repeat(few, lambda: _timed(caption))


def tract_report(
    binary: Path, bundle: Bundle, precision: str, image_path: Path, settings: BenchSettings,
    kernel: str | None = None,
) -> dict[str, Any]:
    """`capdec bench --json`, on the int8 kernel `kernel` names (CAPDEC_INT8_KERNEL) or the one the CPU picks."""
    environ = {name: value for name, value in os.environ.items() if name != KERNEL_VARIABLE}
    if kernel is not None:
        environ[KERNEL_VARIABLE] = kernel
    command = [
        str(binary), "bench", str(image_path), "--model", str(bundle.folder), "--precision", precision,
        "--threads", ",".join(map(str, settings.threads)), "--runs", str(settings.runs),
        "--warmup", str(settings.warmup), "--tokens", str(settings.tokens), "--beam", str(settings.beam_size),
        "--json",
    ]
    completed = subprocess.run(command, check=True, capture_output=True, text=True, env=environ)
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


# Our x86 kernels and the /proc/cpuinfo flags each needs (as src/runtime/kernels/int8_matmul/x86.rs detects them).
X86_KERNEL_FLAGS = {"avx512-vnni": ("avx512f", "avx512bw", "avx512_vnni"), "avx-vnni": ("avx2", "avx_vnni"),
                    "avx2": ("avx2",)}


def kernels_here(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Our x86 kernels this CPU has, best first."""
    flags_line = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split())
    return [kernel for kernel, needed in X86_KERNEL_FLAGS.items() if flags.issuperset(needed)]


def kernels_side_by_side(
    binary: Path, bundle: Bundle, image_path: Path, kernels: list[str], settings: BenchSettings
) -> dict[str, Any]:
    """int8, stage by stage, on each of our kernels and on tract's (`tract`), beside onnxruntime, in one session."""
    image = load_rgb(image_path)
    return {
        "bundle": bundle.manifest["name"],
        "kernels": {kernel: tract_report(binary, bundle, "int8", image_path, settings, kernel) for kernel in kernels},
        "onnxruntime": {threads: onnxruntime_stages(bundle, "int8", threads, image, settings)
                        for threads in settings.threads},
    }


def _median(report: dict[str, Any], threads: int, stage: str) -> float:
    by_threads = next(t for t in report["threads"] if t["threads"] == threads)
    median: float = next(s for s in by_threads["stages"] if s["stage"] == stage)["median_ms"]
    return median


def format_kernels(result: dict[str, Any], settings: BenchSettings) -> str:
    """Per thread count, each stage's median on every kernel and onnxruntime's, then each kernel's 2-thread time
    over its 1-thread time."""
    kernels = list(result["kernels"])
    lines = [f"## {result['bundle']}, int8: our kernels, tract's and onnxruntime's (median ms)", ""]
    for threads in settings.threads:
        lines += [f"{threads} thread(s):", "",
                  "| stage | " + " | ".join(kernels) + " | onnxruntime | " +
                  " | ".join(f"{k} / ORT" for k in kernels) + " |",
                  "|---|" + "---|" * (2 * len(kernels) + 1)]
        for stage in STAGES:
            ours = [_median(result["kernels"][k], threads, stage) for k in kernels]
            theirs = result["onnxruntime"][threads][stage]["median_ms"]
            lines.append(f"| {stage} | " + " | ".join(f"{ms:.2f}" for ms in ours) + f" | {theirs:.2f} | " +
                         " | ".join(f"{ms / theirs:.2f}" for ms in ours) + " |")
        lines.append("")
    if len(settings.threads) > 1:
        first, last = settings.threads[0], settings.threads[-1]
        lines += [f"{last} threads over {first}:", "", "| stage | " + " | ".join(kernels) + " |",
                  "|---|" + "---|" * len(kernels)]
        for stage in STAGES:
            ratios = [_median(result["kernels"][k], last, stage) / _median(result["kernels"][k], first, stage)
                      for k in kernels]
            lines.append(f"| {stage} | " + " | ".join(f"{ratio:.2f}" for ratio in ratios) + " |")
        lines.append("")
    return "\n".join(lines)


def precision_bytes(bundle: Bundle, precision: str) -> int:
    variant = bundle.variant(precision)
    names = [variant[graph]["file"] for graph in ("encoder", "mapper", "decoder", "token_embeddings")]
    names.append(bundle.manifest["tokenizer"]["vocab"])
    return sum(bundle.path(name).stat().st_size for name in names)


def int8_agreement(binary: Path, bundle: Bundle, images: list[Path]) -> dict[str, Any]:
    """int8 against fp32 through tract: captions identical on how many photographs."""
    captions = {}
    for precision in ("fp32", "int8"):
        command = [str(binary), "caption", "--model", str(bundle.folder), "--precision", precision, "--json"]
        completed = subprocess.run(command + [str(image) for image in images], check=True, capture_output=True, text=True)
        captions[precision] = [json.loads(line)["tokens"] for line in completed.stdout.splitlines()]
    same = sum(a == b for a, b in zip(captions["fp32"], captions["int8"]))
    return {"images": len(images), "identical_captions": same}


def benchmark_bundle(
    binary: Path, bundle: Bundle, image_path: Path, photos: list[Path], settings: BenchSettings
) -> dict[str, Any]:
    image = load_rgb(image_path)
    result: dict[str, Any] = {"bundle": bundle.manifest["name"], "precisions": {}}
    for precision in ("fp32", "int8"):
        tract = tract_report(binary, bundle, precision, image_path, settings)
        ort_by_threads = {
            threads: onnxruntime_stages(bundle, precision, threads, image, settings) for threads in settings.threads
        }
        result["precisions"][precision] = {
            "tract": tract,
            "onnxruntime": ort_by_threads,
            "bytes": precision_bytes(bundle, precision),
        }
    result["pytorch_capdec_fp32_caption_beam"] = {
        threads: pytorch_caption_ms(bundle, image, threads, settings) for threads in settings.threads
    }
    result["int8_vs_fp32"] = int8_agreement(binary, bundle, photos)
    result["int8_vs_fp32"]["embedding_cosine_min"] = drift_report(bundle, photos)["embedding_cosine_min"]
    return result


def format_result(result: dict[str, Any], settings: BenchSettings) -> str:
    lines = [f"## {result['bundle']}", ""]
    for precision, data in result["precisions"].items():
        tract = data["tract"]
        rss = tract["peak_rss_mb"]
        size_mb = data["bytes"] / 2**20
        lines.append(
            f"{precision}: load {tract['load_ms']:.0f} ms, peak RSS {rss:.0f} MB, bundle files {size_mb:.0f} MB "
            f"(RSS target 1.3 x size + 40 = {1.3 * size_mb + 40:.0f} MB)"
        )
        lines.append("")
        header = "| stage |" + "".join(f" tract {t}T | ORT {t}T | tract/ORT {t}T |" for t in settings.threads)
        lines += [header, "|---|" + "---|---|---|" * len(settings.threads)]
        for stage in STAGES:
            row = f"| {stage} |"
            for report in tract["threads"]:
                threads = report["threads"]
                ours = next(s for s in report["stages"] if s["stage"] == stage)["median_ms"]
                theirs = data["onnxruntime"][threads][stage]["median_ms"]
                row += f" {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} |"
            lines.append(row)
        lines.append("")
    pytorch = result["pytorch_capdec_fp32_caption_beam"]
    for report in result["precisions"]["int8"]["tract"]["threads"]:
        threads = report["threads"]
        ours = next(s for s in report["stages"] if s["stage"] == "caption beam")["median_ms"]
        theirs = pytorch[threads]["median_ms"]
        lines.append(
            f"caption, beam {settings.beam_size}, {settings.tokens} tokens, {threads} thread(s): PyTorch CapDec-style "
            f"fp32 {theirs:.0f} ms, tract int8 {ours:.0f} ms: {theirs / ours:.1f}x faster"
        )
    agreement = result["int8_vs_fp32"]
    lines.append(
        f"int8 vs fp32: identical captions (tract) on {agreement['identical_captions']}/{agreement['images']} "
        f"photographs, embedding cosine >= {agreement['embedding_cosine_min']:.4f} (onnxruntime)"
    )
    return "\n".join(lines) + "\n"
