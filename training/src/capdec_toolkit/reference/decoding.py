"""Greedy and beam search exactly as docs/bundle-format.md defines them, over any decoder with a KV cache.

The Rust runtime implements the same rules, so that token ids can be compared one for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Stepper(Protocol):
    def start(self) -> np.ndarray:
        """Run the prefix; logits [1, vocab]."""
        ...

    def step(self, sources: list[int], tokens: list[int]) -> np.ndarray:
        """Continue cache rows `sources` of the previous call with `tokens`; logits [len(tokens), vocab]."""
        ...


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float
    finished: bool

    def rank(self, length_normalized: bool) -> float:
        return self.score / len(self.tokens) if length_normalized else self.score


@dataclass(frozen=True)
class SearchRules:
    beam_size: int
    max_tokens: int
    stop_token_ids: tuple[int, ...]
    end_of_text_id: int
    length_normalized: bool = True

    def ends(self, token: int) -> bool:
        return token == self.end_of_text_id or token in self.stop_token_ids


def log_softmax(logits: np.ndarray) -> np.ndarray:
    values = logits.astype(np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def best_tokens(log_probs: np.ndarray, count: int) -> np.ndarray:
    """The `count` best token ids, lowest id first among equals."""
    return np.argsort(-log_probs, kind="stable")[:count]


def greedy(stepper: Stepper, rules: SearchRules) -> Hypothesis:
    log_probs = log_softmax(stepper.start()[0])
    hypothesis = Hypothesis([], 0.0, False)
    while True:
        token = int(np.argmax(log_probs))
        hypothesis.tokens.append(token)
        hypothesis.score += float(log_probs[token])
        if rules.ends(token):
            hypothesis.finished = True
        if hypothesis.finished or len(hypothesis.tokens) >= rules.max_tokens:
            return hypothesis
        log_probs = log_softmax(stepper.step([0], [token])[0])


def beam_search(stepper: Stepper, rules: SearchRules) -> Hypothesis:
    if rules.beam_size == 1:
        return greedy(stepper, rules)
    first = log_softmax(stepper.start()[0])
    beams = [
        Hypothesis([int(token)], float(first[token]), rules.ends(int(token)))
        for token in best_tokens(first, rules.beam_size)
    ]
    # Cache row of each unfinished beam in the previous call's output.
    rows = {index: 0 for index, beam in enumerate(beams) if not beam.finished}
    while rows and len(beams[next(iter(rows))].tokens) < rules.max_tokens:
        live = sorted(rows)
        log_probs = log_softmax(stepper.step([rows[i] for i in live], [beams[i].tokens[-1] for i in live]))
        # (rank, source beam, token or -1 for a finished beam carried over), best first.
        candidates: list[tuple[float, int, int, Hypothesis]] = []
        for index, beam in enumerate(beams):
            if beam.finished:
                candidates.append((beam.rank(rules.length_normalized), index, -1, beam))
        for row, index in enumerate(live):
            beam = beams[index]
            for token in best_tokens(log_probs[row], rules.beam_size):
                token = int(token)
                grown = Hypothesis(
                    beam.tokens + [token], beam.score + float(log_probs[row, token]), rules.ends(token)
                )
                candidates.append((grown.rank(rules.length_normalized), index, token, grown))
        candidates.sort(key=lambda candidate: (-candidate[0], candidate[1], candidate[2]))
        survivors = candidates[: rules.beam_size]
        beams = [candidate[3] for candidate in survivors]
        row_of_live = {index: row for row, index in enumerate(live)}
        rows = {
            new_index: row_of_live[candidate[1]]
            for new_index, candidate in enumerate(survivors)
            if not candidate[3].finished
        }
    return min(enumerate(beams), key=lambda item: (-item[1].rank(rules.length_normalized), item[0]))[1]
