"""The committed fixture bundle is exactly what `capdec-toolkit fixture` writes, and its goldens are what the
reference computes today, on whatever CPU the test runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from capdec_toolkit.parity.fixture import build_fixture
from capdec_toolkit.reference.bundle import Bundle

from conftest import REPO

# The goldens' integers and strings (token ids, captions, top-k ids, shapes, pixel hashes) and the bundle's bytes
# must come out exactly: they come from seeded generators, integer arithmetic and element-wise float arithmetic,
# which give the same bits on every CPU. Their other floats (embeddings, prefixes, log-probabilities, means, the
# int8 drift cosine) are sums computed by onnxruntime's MLAS and numpy's BLAS, which choose their kernels by
# instruction set and so sum in another order on another CPU: on an x86 CPU other than the one that wrote them,
# the int8 embedding cosine came out 0.9999080300 against 0.9999079704 committed (6e-8). These are compared to a
# relative 1e-5 (with an absolute 1e-6 floor for values near zero): over 100 times that difference, while any real
# change (a weight, the preprocessing, a graph) moves them by 1e-3 or more.
FLOAT_RELATIVE = 1e-5
FLOAT_ABSOLUTE = 1e-6


def differences(committed: Any, regenerated: Any, where: str = "") -> list[str]:
    """Where `regenerated` departs from `committed` beyond the rules above; empty when it does not."""
    if isinstance(committed, dict) and isinstance(regenerated, dict):
        if committed.keys() != regenerated.keys():
            return [f"{where}: keys {sorted(committed)} became {sorted(regenerated)}"]
        return [line for key in committed for line in differences(committed[key], regenerated[key], f"{where}.{key}")]
    if isinstance(committed, list) and isinstance(regenerated, list):
        if len(committed) != len(regenerated):
            return [f"{where}: {len(committed)} items became {len(regenerated)}"]
        return [line for i, (a, b) in enumerate(zip(committed, regenerated)) for line in differences(a, b, f"{where}[{i}]")]
    if isinstance(committed, float) and isinstance(regenerated, float):
        if math.isclose(committed, regenerated, rel_tol=FLOAT_RELATIVE, abs_tol=FLOAT_ABSOLUTE):
            return []
        return [f"{where}: {committed!r} became {regenerated!r}"]
    if type(committed) is not type(regenerated) or committed != regenerated:
        return [f"{where}: {committed!r} became {regenerated!r}"]
    return []


def test_goldens_comparison_is_exact_for_integers_and_strings_and_tolerant_for_sums() -> None:
    committed = {"tokens": [1, 2], "text": "a cat", "cosine": 0.9999079704284668, "log_prob": -4.98761}
    assert differences(committed, {**committed, "cosine": 0.9999080300331116, "log_prob": -4.98762}) == []
    assert differences(committed, {**committed, "tokens": [1, 3]}) == [".tokens[1]: 2 became 3"]
    assert differences(committed, {**committed, "text": "a dog"}) == [".text: 'a cat' became 'a dog'"]
    assert differences(committed, {**committed, "cosine": 0.9998}) == [".cosine: 0.9999079704284668 became 0.9998"]
    assert differences(committed, {**committed, "log_prob": -4.99}) == [".log_prob: -4.98761 became -4.99"]
    assert differences({"n": 0}, {"n": 0.0}) == [".n: 0 became 0.0"]
    assert differences({"a": 1}, {"b": 1}) == [": keys ['a'] became ['b']"]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fixture")
    build_fixture(out / "fixture-tiny", out / "goldens.json", out / "images", out / "fixture-tiny-vocab",
                  out / "vocab-goldens.json")
    return out


def test_fixture_bundle_and_images_regenerate_bit_for_bit(regenerated: Path) -> None:
    for name in ("fixture-tiny", "fixture-tiny-vocab"):
        committed = REPO / "models" / name
        assert (regenerated / name / "bundle.toml").read_text() == (committed / "bundle.toml").read_text()
        Bundle.open(committed)  # every committed file matches the hashes
    for folder in ("images", "pil-crops"):
        for image in (regenerated / folder).iterdir():
            assert image.read_bytes() == (REPO / "tests" / "data" / folder / image.name).read_bytes()


@pytest.mark.parametrize(("committed_name", "regenerated_name"),
                         [("fixture-goldens.json", "goldens.json"), ("fixture-vocab-goldens.json", "vocab-goldens.json")])
def test_fixture_goldens_regenerate_on_this_cpu(regenerated: Path, committed_name: str, regenerated_name: str) -> None:
    committed = json.loads((REPO / "tests" / "data" / committed_name).read_text())
    found = differences(committed, json.loads((regenerated / regenerated_name).read_text()))
    assert found == [], "\n".join(found)
