"""`arm_counts.attribute`: each block's count goes to the function it starts in; what lies outside the binary is
counted apart."""

from __future__ import annotations

from capdec_toolkit.parity.arm_counts import OUTSIDE, PIE_BASE, attribute


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
