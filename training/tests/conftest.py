from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from capdec_toolkit.models.checkpoint import CapDecConfig, CapDecModel, save_checkpoint
from capdec_toolkit.models.gpt2 import Gpt2Config
from capdec_toolkit.models.mapper import MapperConfig
from capdec_toolkit.parity.fixture import tiny_hf_clip

REPO = Path(__file__).resolve().parents[2]
CLIP_SIZE = 32
TINY_GPT = Gpt2Config(layers=2, heads=2, width=32, vocab_size=50257, max_positions=128)


@pytest.fixture(scope="session")
def hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf-clip")
    torch.manual_seed(1)
    tiny_hf_clip(folder)
    return folder


@pytest.fixture(scope="session")
def open_clip_resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised OpenAI-style ModifiedResNet CLIP (RN50x4's family), saved in OpenCLIP's HF layout."""
    import open_clip

    folder = tmp_path_factory.mktemp("open-clip-rn")
    config = {
        "embed_dim": CLIP_SIZE,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    torch.manual_seed(2)
    model = open_clip.CLIP(**config)
    preprocess = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def make_checkpoint(folder: Path, kind: str, clip_size: int = CLIP_SIZE, seed: int = 3) -> Path:
    torch.manual_seed(seed)
    mapper = MapperConfig(kind, clip_size, TINY_GPT.width, prefix_length=4, clip_length=4, layers=2, heads=4)  # type: ignore[arg-type]
    path = folder / f"{kind}_prefix-000.pt"
    save_checkpoint(CapDecModel(CapDecConfig(mapper, TINY_GPT)), path)
    return path


@pytest.fixture(params=["mlp", "transformer"])
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path, request.param)


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    folder = REPO / "tests" / "data" / "images"
    return sorted(folder.glob("*.png"))[:2] + sorted(folder.glob("*.jpg"))[:1]
