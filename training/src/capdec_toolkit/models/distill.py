"""Distillation: a smaller GPT-2 decoder (fewer layers, optionally narrower) learns from a CapDec teacher on text
alone, as CapDec trains: the same CLIP text embeddings with the same noise, the teacher's next-token distributions
as soft targets (KL divergence at a temperature) plus cross-entropy on the captions. The student starts from the
teacher's layers (every other one, as DistilGPT-2 and DistilBERT did) or at random; the mapper is copied (and
kept) or trained. The result is an ordinary CapDec checkpoint that `export` takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .checkpoint import CapDecConfig, CapDecModel
from .clip_models import Clip
from .distributed import World
from .gpt2 import Gpt2Config
from .mapper import MapperConfig
from .train import IGNORE, TrainOptions, batches


class DistillError(UserError):
    """A student that cannot be made from its teacher; the message says why and what to change."""


@dataclass(frozen=True)
class DistillOptions:
    layers: int
    """The student's GPT-2 blocks: at least 1, at most the teacher's."""
    width: int | None = None
    """The student's width; the teacher's unless given (a narrower student starts at random)."""
    heads: int | None = None
    init: Literal["teacher", "random"] = "teacher"
    """`teacher`: the teacher's embeddings, final norm and every other block; `random`: nothing of it."""
    mapper: Literal["copy", "train"] = "copy"
    """`copy`: the teacher's mapper, frozen; `train`: trained with the student (from the teacher's where the widths
    match)."""
    temperature: float = 2.0
    soft_weight: float = 0.5
    """The share of the loss that is the KL divergence to the teacher (times temperature squared, as Hinton et al.);
    the rest is cross-entropy on the captions."""
    training: TrainOptions = field(default_factory=TrainOptions)
    vocabulary: tuple[int, ...] | None = None
    """Distil over these GPT-2 ids only (a caption vocabulary, `export.vocabulary.corpus_token_ids`): both models'
    next-token distributions over them, at a fraction of the cost of GPT-2's whole vocabulary. The student's other
    rows get no gradient (only the optimizer's weight decay): export it with the same vocabulary."""


def teacher_layers(teacher: int, student: int) -> list[int]:
    """The teacher's blocks a student of `student` layers starts from: evenly spaced from the first (0, 2, 4, ... for
    half as many)."""
    return [index * teacher // student for index in range(student)]


def make_student(teacher: CapDecModel, options: DistillOptions) -> CapDecModel:
    """The student, initialised as `options` say; refuses what cannot be made, naming the option to change."""
    gpt = teacher.config.gpt
    if not 1 <= options.layers <= gpt.layers:
        raise DistillError(
            f"a student of {options.layers} layers from a teacher of {gpt.layers}: --layers must be 1 to {gpt.layers}"
        )
    width = options.width or gpt.width
    heads = options.heads or (gpt.heads if width == gpt.width else max(1, width // 64))
    if width % heads:
        raise DistillError(f"a student width of {width} is not divisible by {heads} heads (--heads)")
    if options.init == "teacher" and width != gpt.width:
        raise DistillError(
            f"a student of width {width} cannot start from a teacher of width {gpt.width}: "
            "use --init random, or the teacher's width"
        )
    if options.mapper == "copy" and width != gpt.width:
        raise DistillError(
            f"the teacher's mapper makes a prefix of width {gpt.width}, the student's is {width}: use --mapper train"
        )
    mapper = teacher.config.mapper
    config = CapDecConfig(
        MapperConfig(mapper.kind, mapper.clip_size, width, mapper.prefix_length, mapper.clip_length, mapper.layers,
                     mapper.heads),
        Gpt2Config(options.layers, heads, width, gpt.vocab_size, gpt.max_positions),
    )
    torch.manual_seed(options.training.seed)
    student = CapDecModel(config)
    if width == gpt.width:
        student.clip_project.load_state_dict(teacher.clip_project.state_dict())
    if options.init == "teacher":
        source, target = teacher.gpt.transformer, student.gpt.transformer
        target.wte.load_state_dict(source.wte.state_dict())
        target.wpe.load_state_dict(source.wpe.state_dict())
        target.ln_f.load_state_dict(source.ln_f.state_dict())
        for index, layer in enumerate(teacher_layers(gpt.layers, options.layers)):
            target.h[index].load_state_dict(source.h[layer].state_dict())
    return student


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, soft_weight: float
) -> tuple[Tensor, Tensor]:
    """The training loss and, apart, the KL divergence at temperature 1 (what `distill` reports): both over the
    caption's positions only."""
    kept = labels.reshape(-1) != IGNORE
    student_rows = student_logits.reshape(-1, student_logits.shape[-1])[kept]
    teacher_rows = teacher_logits.reshape(-1, teacher_logits.shape[-1])[kept]

    def kl(t: float) -> Tensor:
        return F.kl_div(
            F.log_softmax(student_rows / t, dim=-1), F.log_softmax(teacher_rows / t, dim=-1),
            log_target=True, reduction="batchmean",
        )

    hard = F.cross_entropy(student_rows, labels.reshape(-1)[kept])
    loss = soft_weight * temperature**2 * kl(temperature) + (1 - soft_weight) * hard
    return loss, kl(1.0).detach()


def _vocabulary_rows(vocabulary: tuple[int, ...] | None, vocab_size: int, device: str
                     ) -> tuple[Tensor | None, Tensor | None]:
    """The kept ids as a tensor, and each GPT-2 id's row among them (-1 for the others)."""
    if vocabulary is None:
        return None, None
    if not all(0 <= token < vocab_size for token in vocabulary):
        raise DistillError(f"the caption vocabulary has ids outside the teacher's {vocab_size} tokens")
    rows = torch.tensor(vocabulary, device=device)
    label_rows = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
    label_rows[rows] = torch.arange(len(vocabulary), device=device)
    return rows, label_rows


def _as_rows(labels: Tensor, label_rows: Tensor) -> Tensor:
    """Caption labels as rows of the caption vocabulary; a caption token outside it is refused."""
    scored = labels != IGNORE
    mapped = torch.where(scored, label_rows[labels.clamp(min=0)], labels)
    if (mapped[scored] < 0).any():
        token = int(labels[scored][mapped[scored] < 0][0])
        raise DistillError(f"caption token {token} is not in the caption vocabulary: build it from the same corpus")
    return mapped


def distill(
    clip: Clip,
    teacher: CapDecModel,
    student: CapDecModel,
    captions: list[str],
    options: DistillOptions,
    on_step: Callable[[int, int, float, float], None] = lambda epoch, step, loss, kl: None,
    world: World = World(),
) -> list[float]:
    """Trains `student` in place towards `teacher` (which is not changed); returns the KL divergence (temperature 1)
    of every step (this process's, in a world of several)."""
    training = options.training
    teacher.to(training.device).eval().requires_grad_(False)
    student.to(training.device).train()
    parameters = list(student.gpt.parameters())
    if options.mapper == "train":
        parameters += list(student.clip_project.parameters())
    else:
        student.clip_project.requires_grad_(False)
    optimizer = torch.optim.AdamW(parameters, lr=training.learning_rate)
    net = world.wrap(student)
    rows, label_rows = _vocabulary_rows(options.vocabulary, teacher.config.gpt.vocab_size, training.device)
    divergences = []
    for batch in batches(clip, captions, training, world):
        labels = batch.labels
        if label_rows is not None:
            labels = _as_rows(labels, label_rows)
        with torch.no_grad():
            teacher_logits = teacher.caption_logits(batch.noisy, batch.tokens, rows)
        loss, divergence = distillation_loss(
            net(batch.noisy, batch.tokens, rows), teacher_logits, labels, options.temperature, options.soft_weight,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        divergences.append(divergence.item())
        on_step(batch.epoch, batch.step, loss.item(), divergences[-1])
    student.eval().to("cpu")
    teacher.to("cpu")
    return divergences
