"""`arm_counts`: each block's count goes to the function it starts in, what lies outside the binary counted apart;
each stage's count lies between its samples' marks."""

from __future__ import annotations

import pytest

from capdec_toolkit.parity.arm_counts import OUTSIDE, PIE_BASE, attribute, minimum, stage_counts


def test_blocks_go_to_the_function_they_start_in() -> None:
    table = [(0x1000, "main"), (0x1100, "tract::kernel"), (0x2000, "capdec::search")]
    counts = "\n".join(
        f"{address:x} {executed}"
        for address, executed in [
            (PIE_BASE + 0x1000, 5),
            (PIE_BASE + 0x10FC, 7),
            (PIE_BASE + 0x1100, 100),
            (PIE_BASE + 0x1F00, 11),
            (PIE_BASE + 0x2040, 3),
            (0x5502833E04, 40),
        ]
    )
    assert attribute(counts, table, PIE_BASE) == {
        "main": 12,
        "tract::kernel": 111,
        "capdec::search": 3,
        OUTSIDE: 40,
    }


def test_stages_are_counted_between_their_marks() -> None:
    report = {"threads": [{"threads": 1, "stages": [
        {"stage": "encode", "samples": 1, "int8_multiply_adds": 3200.0, "int8_weights": 64.0},
        {"stage": "decoder token step", "samples": 2, "int8_multiply_adds": 160.0, "int8_weights": 160.0},
    ]}]}
    marks = [100, 1100, 1200, 1250, 1300, 1370]
    counts = stage_counts(report, marks)
    assert [(c.name, c.instructions) for c in counts] == [("encode", 1000), ("decoder token step", 60)]
    # One SDOT per 16 multiply-adds and one load per 16 weights; without the dot product 4 per 16.
    assert minimum(counts[0], dot_product=True) == (3200 + 64) / 16
    assert minimum(counts[1], dot_product=False) == (4 * 160 + 160) / 16


def test_marks_that_do_not_match_the_samples_are_refused() -> None:
    report = {"threads": [{"threads": 1, "stages": [
        {"stage": "map", "samples": 2, "int8_multiply_adds": 0.0, "int8_weights": 0.0},
    ]}]}
    with pytest.raises(SystemExit, match="3 marks for 4"):
        stage_counts(report, [1, 2, 3])
