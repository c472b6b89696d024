"""GPT-2 with an explicit key/value cache, parameter names identical to Hugging Face's GPT2LMHeadModel.

Written out rather than taken from `transformers` so that the exported decoder graph has exactly the inputs the
bundle contract names (embeddings in, explicit positions, one past tensor per layer and kind) and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Gpt2Config:
    layers: int = 12
    heads: int = 12
    width: int = 768
    vocab_size: int = 50257
    max_positions: int = 1024

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


class Conv1D(nn.Module):
    """GPT-2's transposed linear layer: weight is [in, out], so checkpoints load without transposing."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight + self.bias


def gelu_new(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Attention(nn.Module):
    def __init__(self, config: Gpt2Config) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.head_dim
        self.c_attn = Conv1D(config.width, 3 * config.width)
        self.c_proj = Conv1D(config.width, config.width)

    def forward(
        self, x: Tensor, position_ids: Tensor, past_key: Tensor, past_value: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        batch, seq, width = x.shape
        query, key, value = self.c_attn(x.reshape(batch * seq, width)).view(batch, seq, 3 * width).split(width, dim=2)
        query = query.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)
        key = torch.cat([past_key, key.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)], dim=2)
        value = torch.cat([past_value, value.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)], dim=2)
        scores = (query @ key.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        # Causal over absolute positions: the cache holds positions 0..past, queries sit at position_ids.
        key_positions = torch.arange(key.shape[2], device=x.device)
        allowed = key_positions.view(1, 1, 1, -1) <= position_ids.view(batch, 1, seq, 1)
        scores = torch.where(allowed, scores, torch.full_like(scores, torch.finfo(scores.dtype).min))
        attended = torch.softmax(scores, dim=-1) @ value
        attended = attended.transpose(1, 2).reshape(batch * seq, width)
        return self.c_proj(attended).view(batch, seq, width), key, value


class Mlp(nn.Module):
    def __init__(self, config: Gpt2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(config.width, 4 * config.width)
        self.c_proj = Conv1D(4 * config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        return self.c_proj(gelu_new(self.c_fc(rows))).view(x.shape)


class Block(nn.Module):
    def __init__(self, config: Gpt2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width, eps=1e-5)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.width, eps=1e-5)
        self.mlp = Mlp(config)

    def forward(
        self, x: Tensor, position_ids: Tensor, past_key: Tensor, past_value: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        attended, key, value = self.attn(self.ln_1(x), position_ids, past_key, past_value)
        x = x + attended
        return x + self.mlp(self.ln_2(x)), key, value


class Transformer(nn.Module):
    def __init__(self, config: Gpt2Config) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.width)
        self.wpe = nn.Embedding(config.max_positions, config.width)
        self.h = nn.ModuleList([Block(config) for _ in range(config.layers)])
        self.ln_f = nn.LayerNorm(config.width, eps=1e-5)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.01)


class Gpt2(nn.Module):
    """GPT2LMHeadModel's layout (`transformer.*`, `lm_head.weight` tied to `transformer.wte.weight`)."""

    def __init__(self, config: Gpt2Config) -> None:
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.lm_head = nn.Linear(config.width, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def empty_past(self, batch: int) -> list[Tensor]:
        shape = (batch, self.config.heads, 0, self.config.head_dim)
        device = self.transformer.wte.weight.device
        return [torch.zeros(shape, device=device) for _ in range(2 * self.config.layers)]

    def hidden(
        self, inputs_embeds: Tensor, position_ids: Tensor, past: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        """Final hidden states of every new position, and the cache extended by them."""
        x = inputs_embeds + self.transformer.wpe(position_ids)
        present: list[Tensor] = []
        for index, block in enumerate(self.transformer.h):
            x, key, value = block(x, position_ids, past[2 * index], past[2 * index + 1])
            present += [key, value]
        return self.transformer.ln_f(x), present

    def forward(self, inputs_embeds: Tensor, position_ids: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        """The exported decoder step: logits of the last position, then the presents."""
        hidden, present = self.hidden(inputs_embeds, position_ids, list(past))
        return (self.lm_head(hidden[:, -1, :]), *present)

    def sequence_logits(self, inputs_embeds: Tensor, from_position: int = 0, rows: Tensor | None = None) -> Tensor:
        """Logits of whole sequences from `from_position` on, for training (the vocabulary projection is most of a
        small model's cost, so positions nobody scores are not projected), over the vocabulary's `rows` only when
        given."""
        batch, seq, _ = inputs_embeds.shape
        position_ids = torch.arange(seq, device=inputs_embeds.device).expand(batch, seq)
        hidden, _ = self.hidden(inputs_embeds, position_ids, self.empty_past(batch))
        if rows is None:
            return self.lm_head(hidden[:, from_position:])
        return hidden[:, from_position:] @ self.lm_head.weight[rows].T
