"""CapDec/ClipCap checkpoints: the captioning model (`clip_project.*` + `gpt.*`) and a validating loader."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError
from .gpt2 import Gpt2, Gpt2Config
from .mapper import MapperConfig, build_mapper

# Buffers that older `transformers` versions saved with GPT-2; they hold no weights.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


class CheckpointError(UserError):
    """A checkpoint that does not describe a CapDec model; the message names the file and the key."""


@dataclass(frozen=True)
class CapDecConfig:
    mapper: MapperConfig
    gpt: Gpt2Config

    def to_json(self) -> str:
        return json.dumps({"mapper": asdict(self.mapper), "gpt": asdict(self.gpt)}, indent=2)

    @staticmethod
    def from_json(text: str) -> CapDecConfig:
        data = json.loads(text)
        return CapDecConfig(MapperConfig(**data["mapper"]), Gpt2Config(**data["gpt"]))


class CapDecModel(nn.Module):
    def __init__(self, config: CapDecConfig) -> None:
        super().__init__()
        self.config = config
        self.clip_project = build_mapper(config.mapper)
        self.gpt = Gpt2(config.gpt)

    def forward(self, clip_embedding: Tensor, tokens: Tensor, rows: Tensor | None = None) -> Tensor:
        """Training's forward pass (what DistributedDataParallel calls): `caption_logits`."""
        return self.caption_logits(clip_embedding, tokens, rows)

    def caption_logits(self, clip_embedding: Tensor, tokens: Tensor, rows: Tensor | None = None) -> Tensor:
        """Teacher forcing: logits [batch, caption length, vocab], row i predicting caption token i. The first token
        is predicted from the prefix's last position, token i + 1 from token i. Over the vocabulary's `rows` only
        when given."""
        prefix = self.clip_project(clip_embedding)
        embeds = torch.cat([prefix, self.gpt.transformer.wte(tokens[:, :-1])], dim=1)
        return self.gpt.sequence_logits(embeds, from_position=prefix.shape[1] - 1, rows=rows)


def sidecar_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def save_checkpoint(model: CapDecModel, path: Path) -> None:
    """A CapDec-compatible state dict, plus a JSON sidecar with what the weights cannot tell (head counts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value for key, value in model.state_dict().items() if key != "gpt.lm_head.weight"}
    torch.save(state, path)
    sidecar_path(path).write_text(model.config.to_json() + "\n")


def _layer_count(keys: list[str], pattern: str) -> int:
    indices = [int(m.group(1)) for key in keys if (m := re.match(pattern, key))]
    return max(indices) + 1 if indices else 0


def infer_config(
    state: dict[str, Tensor], source: str, gpt_heads: int | None = None, mapper_heads: int | None = None
) -> CapDecConfig:
    """Everything the state dict implies; head counts are not visible in weights (GPT-2: width / 64, CapDec: 8)."""
    keys = list(state)

    def tensor(key: str) -> Tensor:
        if key not in state:
            raise CheckpointError(f"{source}: missing key '{key}'")
        return state[key]

    wte = tensor("gpt.transformer.wte.weight")
    vocab_size, width = wte.shape
    max_positions = tensor("gpt.transformer.wpe.weight").shape[0]
    layers = _layer_count(keys, r"gpt\.transformer\.h\.(\d+)\.")
    if layers == 0:
        raise CheckpointError(f"{source}: missing key 'gpt.transformer.h.0.*' (no GPT-2 blocks)")
    gpt = Gpt2Config(layers, gpt_heads or max(1, width // 64), width, vocab_size, max_positions)
    if width % gpt.heads:
        raise CheckpointError(f"{source}: GPT-2 width {width} is not divisible by {gpt.heads} heads")

    if "clip_project.model.0.weight" in state:
        out_features = tensor("clip_project.model.2.weight").shape[0]
        if out_features % width:
            raise CheckpointError(
                f"{source}: key 'clip_project.model.2.weight' has {out_features} outputs, "
                f"not a multiple of the GPT-2 width {width}"
            )
        clip_size = tensor("clip_project.model.0.weight").shape[1]
        mapper = MapperConfig("mlp", clip_size, width, out_features // width)
    elif "clip_project.linear.weight" in state:
        linear = tensor("clip_project.linear.weight")
        prefix_length = tensor("clip_project.prefix_const").shape[0]
        mapper_layers = _layer_count(keys, r"clip_project\.transformer\.layers\.(\d+)\.")
        mapper = MapperConfig(
            "transformer",
            linear.shape[1],
            width,
            prefix_length,
            clip_length=linear.shape[0] // width,
            layers=mapper_layers,
            heads=mapper_heads or 8,
        )
    else:
        raise CheckpointError(
            f"{source}: missing key 'clip_project.model.0.weight' (MLP mapper) or "
            "'clip_project.linear.weight' (transformer mapper)"
        )
    return CapDecConfig(mapper, gpt)


def load_checkpoint(path: Path, gpt_heads: int | None = None, mapper_heads: int | None = None) -> CapDecModel:
    """Load and check a CapDec state dict: every expected key present with its expected shape, nothing unknown."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a corrupt file
        raise CheckpointError(f"{path}: not a torch state dict ({error})") from error
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    state = {key.removeprefix("module."): value for key, value in state.items()}

    sidecar = sidecar_path(path)
    if sidecar.is_file() and gpt_heads is None and mapper_heads is None:
        config = CapDecConfig.from_json(sidecar.read_text())
    else:
        config = infer_config(state, str(path), gpt_heads, mapper_heads)
    model = CapDecModel(config)
    expected = model.state_dict()
    for key, value in expected.items():
        if key == "gpt.lm_head.weight":
            continue  # tied to the token embedding; older checkpoints include it, newer ones may not
        if key not in state:
            raise CheckpointError(f"{path}: missing key '{key}'")
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"{path}: key '{key}' has shape {list(state[key].shape)}, expected {list(value.shape)}"
            )
    for key in state:
        if key not in expected and not key.endswith(_IGNORED_SUFFIXES):
            raise CheckpointError(f"{path}: unexpected key '{key}' (not part of a CapDec model)")
    loadable = {key: value for key, value in state.items() if key in expected}
    model.load_state_dict(loadable, strict=False)
    model.eval()
    return model
