"""Reading and writing `bundle.toml` (docs/bundle-format.md)."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

# Version 2 adds the caption vocabulary (`decoder.token_ids`); a bundle without one is written as version 1, which
# every runtime reads.
FORMAT_VERSIONS = (1, 2)
TOKEN_IDS_FILE = "token_ids.u32"
PRECISIONS = ("fp32", "int8")
QUANTIZATION = {"fp32": "none", "int8": "dynamic-int8"}
TABLE_DTYPE = {"fp32": "f32", "int8": "q8-rows"}
GRAPHS = ("encoder", "mapper", "decoder")


class BundleError(UserError):
    """A bundle that does not follow the format; the message names the file and what is wrong."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def graph_file(graph: str, precision: str) -> str:
    return f"{graph}.{precision}.onnx"


def table_file(precision: str) -> str:
    return f"token_embeddings.{TABLE_DTYPE[precision].replace('-rows', '')}.bin"


@dataclass
class Manifest:
    name: str
    description: str
    encoder: dict[str, Any]
    mapper: dict[str, Any]
    decoder: dict[str, Any]
    precisions: list[str]
    decoding: dict[str, Any] = field(
        default_factory=lambda: {"beam_size": 5, "length_normalized": True, "lowercase": True}
    )
    vocab: str = "vocab.tiktoken"

    def variant_files(self, precision: str) -> dict[str, str]:
        files = {graph: graph_file(graph, precision) for graph in GRAPHS}
        files["token_embeddings"] = table_file(precision)
        return files

    @property
    def format_version(self) -> int:
        return 2 if "token_ids" in self.decoder else 1

    def all_files(self) -> list[str]:
        names = [self.vocab, *([self.decoder["token_ids"]] if "token_ids" in self.decoder else [])]
        for precision in self.precisions:
            names += list(self.variant_files(precision).values())
        return sorted(set(names))

    def to_toml(self, folder: Path) -> str:
        lines = [
            f"format_version = {self.format_version}",
            f"name = {_toml_value(self.name)}",
            f"description = {_toml_value(self.description)}",
            f'default_precision = "{"int8" if "int8" in self.precisions else self.precisions[0]}"',
        ]
        for table, values in (("encoder", self.encoder), ("mapper", self.mapper), ("decoder", self.decoder)):
            lines += ["", f"[{table}]"] + [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines += ["", "[decoder.token_embeddings]", 'lookup = "file"']
        lines += ["", "[tokenizer]", 'kind = "gpt2-bpe"', f"vocab = {_toml_value(self.vocab)}"]
        lines += ["", "[decoding]"] + [f"{key} = {_toml_value(value)}" for key, value in self.decoding.items()]
        for precision in self.precisions:
            files = self.variant_files(precision)
            lines += ["", f"[variants.{precision}]"]
            for graph in GRAPHS:
                scheme = QUANTIZATION[precision]
                lines.append(f'{graph} = {{ file = "{files[graph]}", quantization = "{scheme}" }}')
            table = files["token_embeddings"]
            lines.append(f'token_embeddings = {{ file = "{table}", dtype = "{TABLE_DTYPE[precision]}" }}')
        for name in self.all_files():
            path = folder / name
            lines += ["", "[[files]]", f'path = "{name}"', f"bytes = {path.stat().st_size}"]
            lines.append(f'sha256 = "{sha256_of(path)}"')
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> None:
        text = self.to_toml(folder)
        temporary = folder / "bundle.toml.partial"
        temporary.write_text(text)
        temporary.replace(folder / "bundle.toml")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


@dataclass
class Bundle:
    folder: Path
    manifest: dict[str, Any]

    @staticmethod
    def open(folder: Path) -> Bundle:
        path = folder / "bundle.toml"
        if not path.is_file():
            raise BundleError(f"{path}: no bundle manifest")
        try:
            manifest = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise BundleError(f"{path}: {error}") from error
        version = manifest.get("format_version")
        if version not in FORMAT_VERSIONS:
            raise BundleError(f"{path}: format_version is {version!r}, this toolkit reads versions 1 and 2")
        if version == 1 and "token_ids" in manifest.get("decoder", {}):
            raise BundleError(f"{path}: decoder.token_ids needs format_version = 2")
        bundle = Bundle(folder, manifest)
        bundle.verify()
        return bundle

    def token_ids(self) -> np.ndarray:
        """The GPT-2 id of every decoder row: the caption vocabulary's, or all of GPT-2's in order."""
        decoder = self.manifest["decoder"]
        if "token_ids" not in decoder:
            return np.arange(decoder["vocab_size"], dtype=np.int64)
        path = self.path(decoder["token_ids"])
        ids = np.fromfile(path, dtype="<u4").astype(np.int64)
        if len(ids) != decoder["vocab_size"] or (np.diff(ids) <= 0).any():
            raise BundleError(f"{path}: expected {decoder['vocab_size']} ascending uint32 GPT-2 ids")
        return ids

    def verify(self) -> None:
        for entry in self.manifest.get("files", []):
            path = self.folder / entry["path"]
            if not path.is_file():
                raise BundleError(f"{path}: listed in bundle.toml but missing")
            if path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
                raise BundleError(f"{path}: size or SHA-256 differs from bundle.toml")

    def variant(self, precision: str) -> dict[str, Any]:
        variants = self.manifest.get("variants", {})
        if precision not in variants:
            raise BundleError(f"{self.folder / 'bundle.toml'}: no [variants.{precision}]")
        return variants[precision]

    def path(self, name: str) -> Path:
        return self.folder / name
