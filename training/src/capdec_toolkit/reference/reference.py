"""The Python reference captioner: a bundle through onnxruntime, and the golden outputs the Rust side must match."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from .bundle import Bundle
from .decoding import SearchRules, Stepper, beam_search, greedy, log_softmax
from .preprocess import load_rgb, preprocess
from .tokenizer import decode_text

TOP_K = 10


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # goldens use 1: deterministic, and tract's default
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def read_token_table(path: Path, dtype: str, vocab_size: int, width: int) -> np.ndarray:
    """A bundle's token embeddings as float32 [vocab, width], as `export.onnx_export.write_token_table` wrote them."""
    raw = np.fromfile(path, dtype=np.uint8)
    if dtype == "f32":
        return raw.view("<f4").reshape(vocab_size, width)
    quantized = raw[: vocab_size * width].view(np.int8).reshape(vocab_size, width).astype(np.float32)
    scales = raw[vocab_size * width :].view("<f4")
    return quantized * scales[:, None]


@dataclass
class ImageResult:
    pixels: np.ndarray
    embedding: np.ndarray
    prefix: np.ndarray


class OrtStepper(Stepper):
    def __init__(self, captioner: OrtCaptioner, prefix: np.ndarray) -> None:
        self.captioner = captioner
        self.prefix = prefix
        self.cache: list[np.ndarray] = []
        self.position = 0

    def _run(self, embeds: np.ndarray, positions: np.ndarray, past: list[np.ndarray]) -> np.ndarray:
        feeds = dict(zip(self.captioner.decoder_inputs, [embeds, positions, *past]))
        logits, *self.cache = self.captioner.decoder.run(None, feeds)
        self.position = int(positions[0, -1]) + 1
        return logits

    def start(self) -> np.ndarray:
        decoder = self.captioner.manifest["decoder"]
        empty = np.zeros((1, decoder["heads"], 0, decoder["width"] // decoder["heads"]), np.float32)
        length = self.prefix.shape[1]
        positions = np.arange(length, dtype=np.int64)[None]
        return self._run(self.prefix, positions, [empty] * (2 * decoder["layers"]))

    def step(self, sources: list[int], tokens: list[int]) -> np.ndarray:
        past = [np.ascontiguousarray(tensor[sources]) for tensor in self.cache]
        embeds = self.captioner.token_table[tokens][:, None, :]
        positions = np.full((len(tokens), 1), self.position, dtype=np.int64)
        return self._run(np.ascontiguousarray(embeds, dtype=np.float32), positions, past)


class OrtCaptioner:
    def __init__(self, bundle: Bundle, precision: str, threads: int = 1) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        variant = bundle.variant(precision)
        self.encoder = _session(bundle.path(variant["encoder"]["file"]), threads)
        self.mapper = _session(bundle.path(variant["mapper"]["file"]), threads)
        self.decoder = _session(bundle.path(variant["decoder"]["file"]), threads)
        self.decoder_inputs = [node.name for node in self.decoder.get_inputs()]
        decoder = self.manifest["decoder"]
        table = variant["token_embeddings"]
        self.token_table = read_token_table(
            bundle.path(table["file"]), table["dtype"], decoder["vocab_size"], decoder["width"]
        )
        # The search runs over decoder rows (logits, table rows); captions and goldens report GPT-2 ids.
        self.token_ids = bundle.token_ids()
        self._row_of = {int(token): row for row, token in enumerate(self.token_ids)}

    def row_of(self, token_id: int) -> int:
        if token_id not in self._row_of:
            raise ValueError(f"{self.bundle.folder}: GPT-2 id {token_id} is not in the bundle's vocabulary")
        return self._row_of[token_id]

    def ids_of(self, rows: list[int]) -> list[int]:
        return [int(self.token_ids[row]) for row in rows]

    def pixels(self, image: Image.Image) -> np.ndarray:
        encoder = self.manifest["encoder"]
        return preprocess(image, encoder["input_size"], encoder["mean"], encoder["std"])

    def embed(self, image_path: Path) -> ImageResult:
        return self.embed_pixels(self.pixels(load_rgb(image_path)))

    def embed_pixels(self, pixels: np.ndarray) -> ImageResult:
        encoder = self.manifest["encoder"]
        (embedding,) = self.encoder.run(None, {"pixel_values": pixels})
        if not encoder["normalized_in_graph"]:
            embedding = embedding / np.linalg.norm(embedding, axis=-1, keepdims=True)
        (prefix,) = self.mapper.run(None, {"clip_embedding": embedding.astype(np.float32)})
        return ImageResult(pixels, embedding[0], prefix)

    def rules(self, beam_size: int) -> SearchRules:
        decoder = self.manifest["decoder"]
        return SearchRules(
            beam_size,
            decoder["max_tokens"],
            tuple(self.row_of(token) for token in decoder["stop_token_ids"]),
            self.row_of(decoder["end_of_text_id"]),
            self.manifest["decoding"]["length_normalized"],
        )

    def caption(self, prefix: np.ndarray, rules: SearchRules) -> tuple[list[int], str, float]:
        """The best hypothesis's GPT-2 ids, its text and its mean log-probability."""
        stepper = OrtStepper(self, prefix)
        best = beam_search(stepper, rules)
        tokens = self.ids_of(best.tokens)
        text = decode_text(
            tokens,
            self.manifest["decoder"]["end_of_text_id"],
            self.manifest["decoding"]["lowercase"],
            self.bundle.path(self.manifest["tokenizer"]["vocab"]),
        )
        return tokens, text, best.score / len(best.tokens)

    def first_logits(self, prefix: np.ndarray) -> np.ndarray:
        return OrtStepper(self, prefix).start()[0]


def _floats(values: np.ndarray) -> list[float]:
    return [float(value) for value in np.asarray(values, dtype=np.float32).ravel()]


def golden(captioner: OrtCaptioner, image_path: Path, beam_size: int) -> dict[str, Any]:
    result = captioner.embed(image_path)
    pixels = result.pixels.astype("<f4")
    flat = pixels.ravel()
    sample_at = np.linspace(0, flat.size - 1, 16).astype(int)
    log_probs = log_softmax(captioner.first_logits(result.prefix))
    top = np.argsort(-log_probs, kind="stable")[:TOP_K]
    greedy_tokens, greedy_text, _ = captioner.caption(result.prefix, captioner.rules(1))
    beam_tokens, beam_text, beam_score = captioner.caption(result.prefix, captioner.rules(beam_size))
    return {
        "pixels": {
            "shape": list(pixels.shape),
            "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
            "mean": float(flat.astype(np.float64).mean()),
            "sample_indices": [int(index) for index in sample_at],
            "sample_values": _floats(flat[sample_at]),
        },
        "embedding": _floats(result.embedding),
        "prefix": {"shape": list(result.prefix.shape), "values": _floats(result.prefix)},
        "first_step_top_k": {"ids": captioner.ids_of(list(top)), "log_probs": [float(log_probs[i]) for i in top]},
        "greedy": {"tokens": greedy_tokens, "text": greedy_text},
        "beam": {"beam_size": beam_size, "tokens": beam_tokens, "text": beam_text, "mean_log_prob": beam_score},
    }


def goldens(bundle: Bundle, images: list[Path], relative_to: Path) -> dict[str, Any]:
    precisions = list(bundle.manifest["variants"])
    beam_size = bundle.manifest["decoding"]["beam_size"]
    per_precision = {}
    for precision in precisions:
        captioner = OrtCaptioner(bundle, precision)
        per_precision[precision] = {
            _relative(image, relative_to): golden(captioner, image, beam_size) for image in images
        }
    return {"bundle": bundle.manifest["name"], "precisions": per_precision}


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
