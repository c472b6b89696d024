"""The caption vocabulary: the GPT-2 tokens a caption corpus uses. `export --vocabulary` cuts the decoder's output
layer and token table to them (docs/bundle-format.md, version 2), so that a step reads and scores only tokens a
caption can hold."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import UserError
from ..models.gpt2 import Gpt2
from ..models.train import read_corpus
from ..reference.tokenizer import gpt2_tokenizer


class VocabularyError(UserError):
    """A caption vocabulary that cannot be built or kept; the message names the corpus or the token."""


def corpus_token_ids(corpus: Path, required: list[int], max_tokens: int = 1024) -> list[int]:
    """Every GPT-2 id the corpus's captions use, read as `train` reads them (a '.' ends each), and `required`
    (end-of-text and the stop tokens), ascending: a decoder row's order is its GPT-2 id's, so that ties between
    rows break as they would between the ids."""
    tokenizer = gpt2_tokenizer()
    ids = set(required)
    for caption in read_corpus(corpus, max_tokens):
        ids.update(tokenizer.encode_ordinary(caption))
    return sorted(ids)


def keep_tokens(gpt: Gpt2, token_ids: list[int]) -> Gpt2:
    """A copy of `gpt` whose output layer and token embeddings hold only `token_ids`, in that order. The rest of the
    network is unchanged, so a kept token's logit is the same dot product as before."""
    vocab_size = gpt.config.vocab_size
    if not token_ids or sorted(set(token_ids)) != list(token_ids):
        raise VocabularyError("the kept token ids must be distinct and ascending")
    outside = [token for token in (token_ids[0], token_ids[-1]) if not 0 <= token < vocab_size]
    if outside:
        raise VocabularyError(f"token id {outside[0]} is outside the decoder's vocabulary of {vocab_size}")
    kept = copy.deepcopy(gpt)
    kept.config = replace(gpt.config, vocab_size=len(token_ids))
    rows = gpt.transformer.wte.weight.detach()[torch.tensor(token_ids)].clone()
    kept.transformer.wte = torch.nn.Embedding.from_pretrained(rows, freeze=False)
    kept.lm_head = torch.nn.Linear(rows.shape[1], len(token_ids), bias=False)
    kept.lm_head.weight = kept.transformer.wte.weight
    return kept
