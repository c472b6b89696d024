"""Caption metrics: BLEU-4, ROUGE-L and CIDEr-D, computed exactly as the COCO caption evaluation (pycocoevalcap)
computes them, over our own tokenisation (pycocoevalcap's PTB tokenizer needs Java).

Tokenisation (the Rust side implements the same): lower-case; every character that is neither a letter nor a digit
(Python `str.isalnum`, Rust `char::is_alphanumeric`) nor white space becomes a space; split on white space.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

Ngram = tuple[str, ...]
MAX_N = 4
# pycocoevalcap's constants: BLEU's smoothing of empty counts, ROUGE-L's recall weight, CIDEr-D's length penalty.
_TINY, _SMALL = 1e-15, 1e-9
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0


def tokenize(text: str) -> list[str]:
    spaced = "".join(char if char.isalnum() or char.isspace() else " " for char in text.lower())
    return spaced.split()


def _ngrams(words: list[str], n: int) -> Counter[Ngram]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _all_ngrams(words: list[str]) -> Counter[Ngram]:
    counts: Counter[Ngram] = Counter()
    for n in range(1, MAX_N + 1):
        counts.update(_ngrams(words, n))
    return counts


@dataclass(frozen=True)
class CaptionScores:
    bleu4: float
    rouge_l: float
    cider_d: float
    captions: int


def bleu4(hypotheses: list[list[str]], references: list[list[list[str]]]) -> float:
    """Corpus BLEU-4: clipped n-gram matches summed over the corpus; brevity against, per caption, the reference
    length closest to the caption's (the shorter on ties)."""
    correct, guessed = [0] * MAX_N, [0] * MAX_N
    hypothesis_length = reference_length = 0
    for hypothesis, refs in zip(hypotheses, references):
        most: Counter[Ngram] = Counter()
        for ref in refs:
            most |= _all_ngrams(ref)
        for ngram, count in _all_ngrams(hypothesis).items():
            correct[len(ngram) - 1] += min(count, most[ngram])
        for n in range(1, MAX_N + 1):
            guessed[n - 1] += max(0, len(hypothesis) - n + 1)
        hypothesis_length += len(hypothesis)
        reference_length += min((abs(len(ref) - len(hypothesis)), len(ref)) for ref in refs)[1]
    precision = 1.0
    for n in range(MAX_N):
        precision *= (correct[n] + _TINY) / (guessed[n] + _SMALL)
    score = precision ** (1.0 / MAX_N)
    ratio = (hypothesis_length + _TINY) / (reference_length + _SMALL)
    return score * math.exp(1 - 1 / ratio) if ratio < 1 else score


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypotheses: list[list[str]], references: list[list[list[str]]]) -> float:
    """Mean over captions of the F-measure (beta 1.2) of the best LCS precision and the best LCS recall over the
    references (each maximised separately)."""
    scores = []
    for hypothesis, refs in zip(hypotheses, references):
        common = [_lcs(ref, hypothesis) for ref in refs]
        precision = max(c / len(hypothesis) for c in common) if hypothesis else 0.0
        recall = max(c / len(ref) for c, ref in zip(common, refs))
        if precision and recall:
            scores.append((1 + ROUGE_BETA**2) * precision * recall / (recall + ROUGE_BETA**2 * precision))
        else:
            scores.append(0.0)
    return sum(scores) / len(scores)


def cider_d(hypotheses: list[list[str]], references: list[list[list[str]]]) -> float:
    """CIDEr-D: tf-idf n-gram vectors (idf from the references of this corpus), hypothesis weights clipped by the
    reference's, a Gaussian penalty on the length difference, averaged over n = 1..4 and references, times 10."""
    document_frequency: Counter[Ngram] = Counter()
    for refs in references:
        document_frequency.update(set().union(*(_all_ngrams(ref) for ref in refs)))
    log_corpus = math.log(len(references))

    def vector(words: list[str]) -> tuple[dict[Ngram, float], list[float], int]:
        weights = {
            ngram: count * (log_corpus - math.log(max(1.0, document_frequency[ngram])))
            for ngram, count in _all_ngrams(words).items()
        }
        norms = [0.0] * MAX_N
        for ngram, weight in weights.items():
            norms[len(ngram) - 1] += weight * weight
        # pycocoevalcap measures a caption's length in bigrams; kept, so that the numbers match the literature's.
        return weights, [math.sqrt(value) for value in norms], max(0, len(words) - 1)

    scores = []
    for hypothesis, refs in zip(hypotheses, references):
        weights, norms, length = vector(hypothesis)
        total = 0.0
        for ref in refs:
            ref_weights, ref_norms, ref_length = vector(ref)
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * CIDER_SIGMA**2))
            for n in range(MAX_N):
                value = sum(
                    min(weight, ref_weights.get(ngram, 0.0)) * ref_weights.get(ngram, 0.0)
                    for ngram, weight in weights.items()
                    if len(ngram) == n + 1
                )
                if norms[n] and ref_norms[n]:
                    value /= norms[n] * ref_norms[n]
                total += value * penalty
        scores.append(10.0 * total / MAX_N / len(refs))
    return sum(scores) / len(scores)


def score_captions(hypotheses: list[str], references: list[list[str]]) -> CaptionScores:
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} reference sets")
    hyps = [tokenize(text) for text in hypotheses]
    refs = [[tokenize(text) for text in texts] for texts in references]
    for index, (texts, words) in enumerate(zip(references, refs)):
        if not texts:
            raise ValueError(f"caption {index + 1} has no references")
        for number, (text, tokens) in enumerate(zip(texts, words)):
            if not tokens:
                raise ValueError(f"reference {number + 1} of caption {index + 1} has no words: `{text}`")
    return CaptionScores(bleu4(hyps, refs), rouge_l(hyps, refs), cider_d(hyps, refs), len(hyps))
