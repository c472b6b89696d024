"""`scripts/toolkit --help` and every command's `--help` answer at once: parsing imports no heavy library."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import capdec_toolkit
from capdec_toolkit.cli import parser

# Together ~7 s to import on two cores, which every `--help` paid while the CLI imported them before parsing.
HEAVY = ("torch", "onnxruntime", "open_clip", "transformers")
SOURCE = Path(capdec_toolkit.__file__).resolve().parents[1]


def _commands() -> list[str]:
    subparsers = next(action for action in parser()._actions if isinstance(action, argparse._SubParsersAction))
    return list(subparsers.choices)


@pytest.mark.parametrize(
    "command", [[]] + [[name] for name in _commands()], ids=lambda command: " ".join(command) or "(root)"
)
def test_help_imports_no_heavy_library(command: list[str]) -> None:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCE), os.environ.get("PYTHONPATH", "")])}
    # `-X importtime` lists on stderr every module the process imports, last column the module's name.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "capdec_toolkit.cli", *command, "--help"],
        capture_output=True, text=True, env=environment, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: capdec-toolkit {' '.join(command)}".rstrip())
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert sorted(name for name in imported if name.split(".")[0] in HEAVY) == []
