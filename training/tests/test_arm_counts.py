"""`arm_counts`: each block's count goes to the function it starts in, what lies outside the binary counted apart;
each stage's count lies between its samples' marks."""

from __future__ import annotations

import argparse

import pytest

from capdec_toolkit.parity.arm_counts import (
    OUTSIDE,
    PIE_BASE,
    STAGES,
    StageCount,
    attribute,
    check,
    minimum,
    stage_counts,
    window,
)


def test_blocks_go_to_the_function_they_start_in() -> None:
    base = PIE_BASE["aarch64"]
    table = [(0x1000, "main"), (0x1100, "tract::kernel"), (0x2000, "capdec::search")]
    counts = "\n".join(
        f"{address:x} {executed}"
        for address, executed in [
            (base + 0x1000, 5),
            (base + 0x10FC, 7),
            (base + 0x1100, 100),
            (base + 0x1F00, 11),
            (base + 0x2040, 3),
            (0x5502833E04, 40),
        ]
    )
    assert attribute(counts, table, base) == {
        "main": 12,
        "tract::kernel": 111,
        "capdec::search": 3,
        OUTSIDE: 40,
    }


def test_stages_are_counted_between_their_marks() -> None:
    work = {"encode": (3200.0, 64.0), "decoder token step": (160.0, 160.0)}
    stages = [{"stage": name, "samples": 2 if name == "decoder token step" else 1,
               "int8_multiply_adds": work.get(name, (0.0, 0.0))[0], "int8_weights": work.get(name, (0.0, 0.0))[1]}
              for name, _ in STAGES]
    # Samples in the order of STAGES; the token step has two, 50 and 70.
    spans = [10, 1000, 20, 30, 50, 70, 40, 80, 90, 60]
    marks, total = [], 0
    for span in spans:
        marks += [total, total + span]
        total += span + 7
    counts = stage_counts({"threads": [{"threads": 1, "stages": stages}]}, marks)
    by_name = {c.name: c.instructions for c in counts}
    assert by_name["encode"] == 1000
    assert by_name["decoder token step"] == 60
    assert by_name["caption beam"] == 90
    assert by_name["decode beam"] == 60
    # One SDOT per 16 multiply-adds and one load per 16 weights (or 32, with ldp); without the dot product 4 per 16.
    encode, token_step = counts[1], counts[4]
    assert minimum(encode, "SDOT") == 3200 / 16 + 64 / 16
    assert minimum(token_step, "smull/sadalp", load_bytes=32) == 4 * 160 / 16 + 160 / 32
    assert minimum(token_step, "fmla") == 160 / 4 + 160 * 4 / 16


def test_marks_that_do_not_match_the_samples_are_refused() -> None:
    stages = [{"stage": name, "samples": 1, "int8_multiply_adds": 0.0, "int8_weights": 0.0}
              for name, _ in STAGES]
    with pytest.raises(SystemExit, match="3 marks for 18"):
        stage_counts({"threads": [{"threads": 1, "stages": stages}]}, [1, 2, 3])


def test_the_window_opens_at_the_last_sample_of_its_stage() -> None:
    # preprocess, encode, map, prefix step: one sample each; then 4 token steps.
    assert window("encode", tokens=4) == 2
    assert window("decoder token step", tokens=4) == 2 * 7
    with pytest.raises(SystemExit, match="no stage `decoding`"):
        window("decoding", tokens=4)


def test_a_check_names_every_stage_off_its_record_or_over_tracts() -> None:
    args = argparse.Namespace(bundle="models/fixture-tiny", precision="int8", tokens=4, beam=5)

    def counts(token_step: float) -> list[StageCount]:
        return [StageCount("encode", 1000.0, 0.0, 0.0), StageCount("decoder token step", token_step, 0.0, 0.0)]

    expected = {"bundle": "models/fixture-tiny", "precision": "int8", "tokens": 4, "beam": 5, "tolerance": 0.03,
                "cores": {"a72": {"encode": 1000, "decoder token step": 100}}}
    assert check(expected, args, {"a72": counts(500.0)}, {"a72": counts(102.0)}) == []
    problems = check(expected, args, {"a72": counts(90.0)}, {"a72": counts(110.0)})
    assert problems == [
        "a72, decoder token step: 110 instructions, recorded 100 (+10.0%, tolerance 3%)",
        "a72, decoder token step: ours 110 instructions, over tract's 90",
    ]
    args.tokens = 2
    assert check(expected, args, {"a72": counts(500.0)}, {}) == [
        "recorded with tokens 4, run with 2",
        "a72: recorded but not run (--cores)",
    ]
