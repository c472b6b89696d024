"""The ARM parity check's verdicts (scripts/arm-parity): which token differences it lets through."""

from __future__ import annotations

from typing import Any

from capdec_toolkit.parity.arm_parity import Job, jobs_for, tolerance


def _job(bundle: str, precision: str, images: int = 60) -> Job:
    return Job(bundle, precision, "beam", [], [f"scene-{index:03d}.png" for index in range(images)])


def _difference(x86_log_prob: float, arm_log_prob: float) -> tuple[str, int, dict[str, Any], dict[str, Any]]:
    return ("scene-000.png", 3, {"tokens": [1, 2, 3, 4], "mean_log_prob": x86_log_prob},
            {"tokens": [1, 2, 3, 5], "mean_log_prob": arm_log_prob})


def test_no_difference_always_passes() -> None:
    assert tolerance(_job("fixture-tiny", "fp32"), [])


def test_fp32_and_the_fixture_must_match_exactly() -> None:
    near_tie = [_difference(-0.4161, -0.4190)]
    assert not tolerance(_job("demo", "fp32"), near_tie)
    assert not tolerance(_job("fixture-tiny", "int8"), near_tie)


def test_int8_near_ties_pass_only_when_few_and_close() -> None:
    assert tolerance(_job("demo", "int8"), [_difference(-0.4161, -0.4190)] * 3)
    assert not tolerance(_job("demo", "int8"), [_difference(-0.4161, -0.4190)] * 4)  # over 5% of 60
    assert not tolerance(_job("demo", "int8"), [_difference(-0.40, -0.46)])  # not a near-tie


def test_jobs_cover_both_precisions_and_searches_on_real_files() -> None:
    jobs = jobs_for(["fixture-tiny"])
    assert {(job.precision, job.search) for job in jobs} == {("fp32", "greedy"), ("fp32", "beam"),
                                                            ("int8", "greedy"), ("int8", "beam")}
    assert "tests/data/pil-crops/rocket.jpg.png" in jobs[0].images and len(jobs[0].images) >= 6
