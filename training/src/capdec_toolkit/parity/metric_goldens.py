"""The caption metrics' goldens, `tests/data/metric-goldens.json`: small corpora and the scores
`reference/metrics.py` gives them, which the Rust port (`src/eval/metrics.rs`) must reproduce. Written by
`capdec-toolkit metric-goldens`; a test recomputes every case so the file cannot drift from `metrics.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..reference.metrics import score_captions


@dataclass(frozen=True)
class GoldenCase:
    name: str
    hypotheses: list[str]
    references: list[list[str]]


GOLDEN_CASES = (
    GoldenCase(
        "scenes",
        [
            "a big red circle to the right of a small orange star.",
            "a green circle below a white star.",
            "a picture of a large yellow triangle.",
        ],
        [
            [
                "a large red circle to the right of a little orange star.",
                "a big red circle and a small orange star.",
                "a red circle to the right of an orange star on a white background.",
            ],
            [
                "a picture of a large green circle below a little white star.",
                "a big green circle below a small white star.",
                "a green circle below a white star on a grey background.",
            ],
            ["a large orange triangle and a small yellow square.", "an orange triangle on a grey background."],
        ],
    ),
    GoldenCase(
        "empty-hypotheses",
        ["", "...", "two blue stars"],
        [["a red circle."], ["a big red circle on a grey background."], ["two blue stars.", "a pair of blue stars"]],
    ),
    GoldenCase(
        "punctuation-and-capitals",
        ["A Big RED circle!!", "it's 2 X-rays, (and) a   STAR;", "Two\tblue\nstars..."],
        [
            ["a big red circle.", "A RED CIRCLE, big."],
            ["it is two x rays and a star", "it's 2 x-rays and a star!"],
            ["two blue stars side by side", "Blue stars: two."],
        ],
    ),
    GoldenCase(
        "non-ascii",
        ["un café près de l'ÉGLISE", "ΟΔΟΣ και σπίτι", "日本 の 猫 — ein Straßenfest"],
        [
            ["un café près de l'église.", "le café, près de l'église"],
            ["ο δρόμος και το σπίτι", "οδος και σπιτι"],
            ["日本 の 猫", "ein straßenfest in 日本"],
        ],
    ),
    GoldenCase(
        "repeated-words",
        ["a a a a red red circle circle circle", "star star star star star star", "the the"],
        [
            ["a red circle", "a big red circle and a red star"],
            ["a star", "two stars and a star"],
            ["the cat on the mat", "the the the"],
        ],
    ),
    GoldenCase(
        "longer-and-shorter",
        [
            "a picture of a large red circle to the right of a little orange star on a white background today",
            "circle",
            "green square",
            "a big blue star above a small green square on a black background and nothing else at all",
        ],
        [
            ["a red circle to the right of an orange star."],
            ["a large red circle on a white background."],
            ["a small green square", "a green square on black"],
            ["a blue star above a green square.", "a big blue star."],
        ],
    ),
    GoldenCase(
        "one-caption",
        ["a big red circle on a grey background"],
        [["a big red circle on a grey background.", "a red circle"]],
    ),
    GoldenCase(
        "references-of-different-lengths",
        [
            "one two three four five",
            "a red circle and a star",
            "blue",
            "the quick brown fox jumps over the lazy dog",
        ],
        [
            ["one two three four", "one two three four five six", "one"],
            ["a red circle", "a red circle and a blue star on a grey background", "a circle and a star", "star"],
            ["blue star", "a blue star on white", "blue"],
            ["the quick brown fox", "a fox jumps over a dog", "the lazy dog sleeps", "quick fox lazy dog jumps high"],
        ],
    ),
    GoldenCase(
        "no-overlap",
        ["zebra giraffe elephant lion", "purple"],
        [["a red circle on white"], ["two blue stars", "a green square"]],
    ),
)


def metric_goldens() -> dict[str, Any]:
    cases = []
    for case in GOLDEN_CASES:
        scores = score_captions(case.hypotheses, case.references)
        cases.append(
            {
                "name": case.name,
                "hypotheses": case.hypotheses,
                "references": case.references,
                "bleu4": scores.bleu4,
                "rouge_l": scores.rouge_l,
                "cider_d": scores.cider_d,
            }
        )
    return {
        "description": "BLEU-4, ROUGE-L and CIDEr-D (fractions) of small corpora by capdec_toolkit.reference.metrics; "
        "written by `capdec-toolkit metric-goldens`, checked by training/tests/test_metric_goldens.py "
        "and tests/metric_goldens.rs",
        "cases": cases,
    }
