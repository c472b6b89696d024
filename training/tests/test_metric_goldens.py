"""`tests/data/metric-goldens.json`, the Rust port's goldens, is what `metrics.py` computes today."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capdec_toolkit.cli import main
from capdec_toolkit.parity.metric_goldens import GOLDEN_CASES, metric_goldens
from capdec_toolkit.reference.metrics import score_captions

from conftest import REPO

GOLDENS = REPO / "tests" / "data" / "metric-goldens.json"
SCORES = ("bleu4", "rouge_l", "cider_d")


def _stored() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDENS.read_text(encoding="utf-8"))
    return data


def test_stored_goldens_are_the_cases_and_their_current_scores() -> None:
    stored = _stored()["cases"]
    assert [case["name"] for case in stored] == [case.name for case in GOLDEN_CASES]
    for case, golden in zip(stored, GOLDEN_CASES):
        assert case["hypotheses"] == golden.hypotheses and case["references"] == golden.references
        scores = score_captions(case["hypotheses"], case["references"])
        for name in SCORES:
            # Relative only: a stored zero must stay exactly zero.
            assert case[name] == pytest.approx(getattr(scores, name), rel=1e-12, abs=0.0), (case["name"], name)


def test_goldens_cover_the_edge_cases() -> None:
    cases = {case.name: case for case in GOLDEN_CASES}
    assert "" in cases["empty-hypotheses"].hypotheses
    assert len(cases["one-caption"].hypotheses) == 1
    assert any(not text.isascii() for text in cases["non-ascii"].hypotheses)
    lengths = [len(ref.split()) for ref in cases["references-of-different-lengths"].references[0]]
    assert len(set(lengths)) == len(lengths) > 1
    assert score_captions(cases["one-caption"].hypotheses, cases["one-caption"].references).cider_d == 0.0


def test_cli_writes_the_goldens(tmp_path: Path) -> None:
    out = tmp_path / "goldens.json"
    assert main(["metric-goldens", "--out", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == metric_goldens()
    assert [case["name"] for case in written["cases"]] == [case["name"] for case in _stored()["cases"]]
