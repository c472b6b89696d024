"""The committed fixture bundle is exactly what `capdec-toolkit fixture` writes."""

from __future__ import annotations

import json
from pathlib import Path

from capdec_toolkit.bundle import Bundle
from capdec_toolkit.fixture import build_fixture

from conftest import REPO


def test_fixture_regenerates_bit_for_bit(tmp_path: Path) -> None:
    committed = REPO / "models" / "fixture-tiny"
    build_fixture(tmp_path / "fixture-tiny", tmp_path / "goldens.json", tmp_path / "images")
    assert (tmp_path / "fixture-tiny" / "bundle.toml").read_text() == (committed / "bundle.toml").read_text()
    Bundle.open(committed)  # every committed file matches the hashes
    regenerated = json.loads((tmp_path / "goldens.json").read_text())
    assert regenerated == json.loads((REPO / "tests" / "data" / "fixture-goldens.json").read_text())
    for folder in ("images", "pil-crops"):
        for image in (tmp_path / folder).iterdir():
            assert image.read_bytes() == (REPO / "tests" / "data" / folder / image.name).read_bytes()
