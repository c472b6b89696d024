from __future__ import annotations

import itertools

import numpy as np

from capdec_toolkit.reference.decoding import SearchRules, beam_search, greedy, log_softmax
from capdec_toolkit.reference.tokenizer import decode_text, gpt2_tokenizer


class TableStepper:
    """A toy decoder whose next-token logits depend only on the previous token, with a real cache protocol."""

    def __init__(self, table: np.ndarray, start_logits: np.ndarray) -> None:
        self.table = table
        self.start_logits = start_logits
        self.calls: list[tuple[list[int], list[int]]] = []

    def start(self) -> np.ndarray:
        return self.start_logits[None]

    def step(self, sources: list[int], tokens: list[int]) -> np.ndarray:
        self.calls.append((sources, tokens))
        return self.table[tokens]


def _sequence_score(stepper: TableStepper, tokens: tuple[int, ...]) -> float:
    score = log_softmax(stepper.start_logits)[tokens[0]]
    for previous, token in zip(tokens, tokens[1:]):
        score += log_softmax(stepper.table[previous])[token]
    return float(score)


def test_beam_search_with_wide_beam_finds_the_exhaustive_best() -> None:
    rng = np.random.default_rng(0)
    vocab = 6
    stepper = TableStepper(rng.normal(size=(vocab, vocab)) * 2, rng.normal(size=vocab) * 2)
    rules = SearchRules(beam_size=vocab**3, max_tokens=3, stop_token_ids=(0,), end_of_text_id=5)
    best = beam_search(stepper, rules)
    candidates = []
    for length in (1, 2, 3):
        for tokens in itertools.product(range(vocab), repeat=length):
            ends = [i for i, token in enumerate(tokens) if token in (0, 5)]
            if (ends and ends[0] != length - 1) or (not ends and length < 3):
                continue
            candidates.append((_sequence_score(stepper, tokens) / length, tokens))
    expected = max(candidates)
    assert tuple(best.tokens) == expected[1]
    assert abs(best.score / len(best.tokens) - expected[0]) < 1e-12


def test_greedy_stops_at_the_stop_token_and_keeps_it() -> None:
    table = np.full((4, 4), -5.0)
    table[1, 2] = 5.0
    table[2, 3] = 5.0
    start = np.array([0.0, 9.0, 0.0, 0.0])
    best = greedy(TableStepper(table, start), SearchRules(1, 10, stop_token_ids=(3,), end_of_text_id=0))
    assert best.tokens == [1, 2, 3] and best.finished


def test_beam_cache_rows_follow_their_source_beams() -> None:
    rng = np.random.default_rng(1)
    stepper = TableStepper(rng.normal(size=(8, 8)), rng.normal(size=8))
    beam_search(stepper, SearchRules(beam_size=3, max_tokens=4, stop_token_ids=(), end_of_text_id=7))
    assert stepper.calls[0][0] == [0, 0, 0]  # every first beam continues the single prefix row
    for sources, tokens in stepper.calls:
        assert len(sources) == len(tokens) and max(sources) < 3


def test_gpt2_vocabulary_round_trip() -> None:
    tokenizer = gpt2_tokenizer()
    assert tokenizer.n_vocab == 50257
    ids = tokenizer.encode_ordinary("A man standing next to a car.")
    assert ids[-1] == 13
    assert decode_text(ids + [50256], 50256, lowercase=True) == "a man standing next to a car."
    # A character split across tokens decodes whole; a dangling partial byte becomes U+FFFD.
    ids = tokenizer.encode_ordinary(" caf\u00e9 \U0001F600")
    assert decode_text(ids, 50256, lowercase=False) == "caf\u00e9 \U0001F600"
    assert decode_text(tokenizer.encode_ordinary(" \U0001F600")[:-1], 50256, False).endswith("\ufffd")
