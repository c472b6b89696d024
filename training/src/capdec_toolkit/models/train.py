"""CapDec's text-only training: noisy CLIP text embeddings stand in for images; mapper + GPT-2 learn to caption."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..reference.tokenizer import gpt2_tokenizer
from .checkpoint import CapDecModel
from .clip_models import Clip
from .distributed import World
from .gpt2 import Gpt2, Gpt2Config

IGNORE = -100


class CorpusError(UserError):
    """A corpus line that cannot be trained on; the message names the file and the line."""


@dataclass(frozen=True)
class TrainOptions:
    noise_variance: float = 0.016
    epochs: int = 10
    batch_size: int = 40
    learning_rate: float = 2e-5
    freeze_gpt: bool = False
    seed: int = 0
    max_caption_tokens: int = 40
    device: str = "cpu"


def read_corpus(path: Path, max_tokens: int) -> list[str]:
    """One caption a line, UTF-8; each ends with '.' (appended if missing) so the model learns where to stop."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CorpusError(f"{path}: cannot read corpus ({error.strerror})") from error
    tokenizer = gpt2_tokenizer()
    captions = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            caption = line.decode("utf-8").strip()
        except UnicodeDecodeError as error:
            raise CorpusError(f"{path}:{number}: not UTF-8 (byte {error.start})") from error
        if not caption:
            raise CorpusError(f"{path}:{number}: empty caption")
        _refuse_unknown_characters(caption, f"{path}:{number}")
        if not caption.endswith("."):
            caption += "."
        if len(tokenizer.encode_ordinary(caption)) > max_tokens:
            raise CorpusError(f"{path}:{number}: caption longer than {max_tokens} GPT-2 tokens")
        captions.append(caption)
    if not captions:
        raise CorpusError(f"{path}: no captions")
    return captions


def _refuse_unknown_characters(caption: str, where: str) -> None:
    """Control, unassigned, private-use and replacement characters: what a file in another encoding, or a binary
    one, decodes to. GPT-2 would take their bytes, and a model would learn to write them."""
    for column, character in enumerate(caption, start=1):
        unknown = unicodedata.category(character) in ("Cc", "Cn", "Co", "Cs") or character == "\ufffd"
        if unknown and character != "\t":
            raise CorpusError(
                f"{where}:{column}: unknown character U+{ord(character):04X} "
                f"({unicodedata.name(character, 'unnamed')}); captions are plain text"
            )


def inject_noise(embeddings: Tensor, variance: float, generator: torch.Generator | None = None) -> Tensor:
    """CapDec: L2-normalise, add N(0, variance) per dimension, L2-normalise again."""
    normalised = F.normalize(embeddings, dim=-1)
    noise = torch.randn(normalised.shape, generator=generator, device=normalised.device) * variance**0.5
    return F.normalize(normalised + noise, dim=-1)


@torch.no_grad()
def text_embeddings(clip: Clip, captions: list[str], batch_size: int = 256) -> Tensor:
    parts = [clip.encode_text(captions[start : start + batch_size]).float() for start in range(0, len(captions), batch_size)]
    return torch.cat(parts)


def _pad(token_lists: list[list[int]]) -> tuple[Tensor, Tensor]:
    length = max(len(tokens) for tokens in token_lists)
    tokens = torch.zeros(len(token_lists), length, dtype=torch.long)
    labels = torch.full((len(token_lists), length), IGNORE, dtype=torch.long)
    for row, caption in enumerate(token_lists):
        tokens[row, : len(caption)] = torch.tensor(caption)
        labels[row, : len(caption)] = torch.tensor(caption)
    return tokens, labels


def caption_loss(model: nn.Module, embeddings: Tensor, tokens: Tensor, labels: Tensor) -> Tensor:
    """`model` is a CapDecModel, or one wrapped by `World.wrap`: its forward pass is `caption_logits`."""
    logits = model(embeddings, tokens)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


@dataclass(frozen=True)
class Batch:
    epoch: int
    step: int
    noisy: Tensor
    """The batch's CLIP text embeddings with CapDec's noise."""
    tokens: Tensor
    labels: Tensor


def batches(clip: Clip, captions: list[str], options: TrainOptions, world: World = World()) -> Iterator[Batch]:
    """CapDec's training batches: every epoch the captions in a seeded order, each with a fresh draw of noise on its
    CLIP text embedding. `train` and `distill` both take them. In a world of several processes each takes its shard
    of every batch, and a last batch too small to give every process a caption is left out."""
    torch.manual_seed(options.seed)
    generator = torch.Generator(device=options.device).manual_seed(options.seed + world.rank)
    tokenizer = gpt2_tokenizer()
    token_lists = [tokenizer.encode_ordinary(caption) for caption in captions]
    embeddings = text_embeddings(clip, captions).to(options.device)
    for epoch in range(options.epochs):
        order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(options.seed + epoch))
        for step, start in enumerate(range(0, len(captions), options.batch_size)):
            whole = order[start : start + options.batch_size].tolist()
            if len(whole) < world.size:
                continue
            batch = world.shard(whole)
            tokens, labels = _pad([token_lists[index] for index in batch])
            noisy = inject_noise(embeddings[batch], options.noise_variance, generator)
            yield Batch(epoch, step, noisy, tokens.to(options.device), labels.to(options.device))


def train(
    clip: Clip,
    model: CapDecModel,
    captions: list[str],
    options: TrainOptions,
    on_step: Callable[[int, int, float], None] = lambda epoch, step, loss: None,
    world: World = World(),
) -> list[float]:
    """Trains `model` in place; returns the loss of every step (this process's, in a world of several)."""
    model.to(options.device).train()
    parameters = list(model.clip_project.parameters())
    if options.freeze_gpt:
        model.gpt.requires_grad_(False)
        model.gpt.eval()
    else:
        parameters += list(model.gpt.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=options.learning_rate)
    net = world.wrap(model)
    losses = []
    for batch in batches(clip, captions, options, world):
        loss = caption_loss(net, batch.noisy, batch.tokens, batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        on_step(batch.epoch, batch.step, losses[-1])
    model.eval().to("cpu")
    return losses


def load_pretrained_gpt2(source: str) -> Gpt2:
    """GPT-2 from a Hugging Face name or directory (our Gpt2 uses the same parameter names)."""
    from transformers import GPT2LMHeadModel

    pretrained = GPT2LMHeadModel.from_pretrained(source)
    hf = pretrained.config
    gpt = Gpt2(Gpt2Config(hf.n_layer, hf.n_head, hf.n_embd, hf.vocab_size, hf.n_positions))
    gpt.load_state_dict(pretrained.state_dict(), strict=False)
    missing = set(gpt.state_dict()) - set(pretrained.state_dict())
    if missing:
        raise ValueError(f"{source}: GPT-2 weights lack {sorted(missing)[0]}")
    return gpt
