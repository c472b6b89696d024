"""CapDec's two mappers from a CLIP embedding to a GPT-2 prefix, parameter names as in CapDec/ClipCap checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

MapperKind = Literal["mlp", "transformer"]


@dataclass(frozen=True)
class MapperConfig:
    kind: MapperKind
    clip_size: int
    width: int
    prefix_length: int
    clip_length: int = 40
    layers: int = 8
    heads: int = 8


class MlpMapper(nn.Module):
    """ClipCap's MLP: Linear(d, L*w/2), Tanh, Linear(L*w/2, L*w), stored under `model.{0,2}`."""

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.prefix_length = config.prefix_length
        hidden = config.width * config.prefix_length // 2
        self.model = nn.Sequential(
            nn.Linear(config.clip_size, hidden),
            nn.Tanh(),
            nn.Linear(hidden, config.width * config.prefix_length),
        )

    def forward(self, clip_embedding: Tensor) -> Tensor:
        return self.model(clip_embedding).view(clip_embedding.shape[0], self.prefix_length, -1)


class MultiHeadAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.to_queries = nn.Linear(width, width, bias=False)
        self.to_keys_values = nn.Linear(width, 2 * width, bias=False)
        self.project = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        head_dim = width // self.heads
        queries = self.to_queries(x).reshape(batch, length, self.heads, head_dim).transpose(1, 2)
        keys_values = self.to_keys_values(x).reshape(batch, length, 2, self.heads, head_dim)
        keys = keys_values[:, :, 0].transpose(1, 2)
        values = keys_values[:, :, 1].transpose(1, 2)
        attention = torch.softmax((queries @ keys.transpose(-2, -1)) * self.scale, dim=-1)
        return self.project((attention @ values).transpose(1, 2).reshape(batch, length, width))


class MlpBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm block, ReLU MLP of ratio 2, no biases on queries/keys/values (CapDec's layout)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MlpBlock(width, 2 * width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerStack(nn.Module):
    def __init__(self, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([TransformerLayer(width, heads) for _ in range(layers)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TransformerMapper(nn.Module):
    """CapDec's mapper: Linear to `clip_length` tokens, a learned constant prefix after them, a transformer;
    the prefix is the output at the constant's positions."""

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.clip_length = config.clip_length
        self.transformer = TransformerStack(config.width, config.heads, config.layers)
        self.linear = nn.Linear(config.clip_size, config.clip_length * config.width)
        self.prefix_const = nn.Parameter(torch.randn(config.prefix_length, config.width))

    def forward(self, clip_embedding: Tensor) -> Tensor:
        batch = clip_embedding.shape[0]
        clip_tokens = self.linear(clip_embedding).view(batch, self.clip_length, -1)
        prefix = self.prefix_const.unsqueeze(0).expand(batch, *self.prefix_const.shape)
        return self.transformer(torch.cat([clip_tokens, prefix], dim=1))[:, self.clip_length :]


def build_mapper(config: MapperConfig) -> nn.Module:
    if config.kind == "mlp":
        return MlpMapper(config)
    return TransformerMapper(config)
