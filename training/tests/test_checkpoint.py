from __future__ import annotations

from pathlib import Path

import pytest
import torch

from capdec_toolkit.cli import main
from capdec_toolkit.models.checkpoint import CheckpointError, load_checkpoint

from conftest import make_checkpoint


def _resave_without_sidecar(path: Path, edit: dict[str, torch.Tensor | None]) -> Path:
    state = torch.load(path, weights_only=True)
    for key, value in edit.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    out = path.with_name("edited.pt")
    torch.save(state, out)
    return out


def test_loads_both_mapper_kinds_with_inferred_config(tmp_path: Path) -> None:
    for kind in ("mlp", "transformer"):
        path = make_checkpoint(tmp_path, kind)
        path.with_suffix(".json").unlink()  # released CapDec checkpoints have no sidecar
        model = load_checkpoint(path, gpt_heads=2, mapper_heads=4)
        assert model.config.mapper.kind == kind
        assert model.config.mapper.prefix_length == 4
        assert model.config.gpt.layers == 2


def test_missing_key_is_named(tmp_path: Path) -> None:
    path = _resave_without_sidecar(make_checkpoint(tmp_path, "transformer"), {"gpt.transformer.h.1.ln_2.weight": None})
    with pytest.raises(CheckpointError, match=r"edited.pt: missing key 'gpt.transformer.h.1.ln_2.weight'"):
        load_checkpoint(path, gpt_heads=2, mapper_heads=4)


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    path = _resave_without_sidecar(
        make_checkpoint(tmp_path, "mlp"), {"clip_project.model.0.bias": torch.zeros(7)}
    )
    with pytest.raises(CheckpointError, match=r"key 'clip_project.model.0.bias' has shape \[7\], expected \[64\]"):
        load_checkpoint(path, gpt_heads=2)


def test_unknown_key_and_garbage_file(tmp_path: Path) -> None:
    path = _resave_without_sidecar(make_checkpoint(tmp_path, "mlp"), {"clip_project.extra": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected key 'clip_project.extra'"):
        load_checkpoint(path, gpt_heads=2)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a torch state dict"):
        load_checkpoint(garbage)


def test_cli_reports_a_bad_checkpoint_as_an_error_line(
    tmp_path: Path, hf_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _resave_without_sidecar(make_checkpoint(tmp_path, "mlp"), {"gpt.transformer.wpe.weight": None})
    status = main(["export", "--clip", str(hf_clip_dir), "--checkpoint", str(path), "--out", str(tmp_path / "b")])
    assert status == 1
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "b" / "bundle.toml").exists()
