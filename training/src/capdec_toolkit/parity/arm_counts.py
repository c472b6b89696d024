"""Instructions the ARM builds execute under qemu-user, counted by a TCG plugin (scripts/arm-bench.d/count.c) as
the same emulated cores as ARM parity (`arm_parity.CORES`, each with its board's /proc/cpuinfo where a mount
namespace can be made), attributed to the functions of a non-stripped build (`nm`). Counts are deterministic:
comparable across runs and machines, unlike times under emulation.

A decoder token step is the difference of two greedy captions of different lengths divided by the difference of
their token counts (loading, encoding and mapping cancel out); the functions that grow with the caption are
shown the same way. Run by scripts/arm-bench, on the system Python (standard library only)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from .arm_parity import CORES, can_bind_cpuinfo, qemu_runner

# qemu-user loads a 64-bit position-independent guest program here.
PIE_BASE = 0x5500000000
OUTSIDE = "[outside capdec: loader, libc, libm]"
DYNAMIC_QEMU = {"aarch64": "qemu-aarch64", "armv7": "qemu-arm"}
NM = {"aarch64": "aarch64-linux-gnu-nm", "armv7": "arm-linux-gnueabihf-nm"}


def symbols(nm: str, binary: Path) -> list[tuple[int, str]]:
    """The binary's functions, by start address, demangled."""
    listed = subprocess.run([nm, "-n", "-C", "--defined-only", str(binary)], capture_output=True, text=True,
                            check=True).stdout
    table = []
    for line in listed.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            table.append((int(parts[0], 16), parts[2]))
    if not table:
        raise SystemExit(f"arm-bench: {binary} has no symbols: count a build that is not stripped")
    return table


def attribute(counts: str, table: list[tuple[int, str]], base: int) -> Counter[str]:
    """Each translation block's instructions, to the function it starts in."""
    starts = [start for start, _ in table]
    end = starts[-1] + (1 << 20)
    by_function: Counter[str] = Counter()
    for line in counts.splitlines():
        vaddr_text, executed = line.split()
        address = int(vaddr_text, 16) - base
        if address < starts[0] or address > end:
            by_function[OUTSIDE] += int(executed)
            continue
        low, high = 0, len(starts) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if starts[middle] <= address:
                low = middle
            else:
                high = middle - 1
        by_function[table[low][1]] += int(executed)
    return by_function


def short(name: str, width: int = 96) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arm-bench", description=__doc__)
    parser.add_argument("--binary", type=Path, required=True, help="a non-stripped aarch64 build of capdec")
    parser.add_argument("--plugin", type=Path, required=True, help="count.so")
    parser.add_argument("--bundle", default="models/demo")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--image", default="tests/data/images/chelsea.png")
    parser.add_argument("--cores", default="a53,a72,a76", help="keys of arm_parity.CORES (aarch64 ones)")
    parser.add_argument("--tokens", default="1,11", help="two caption lengths, greedy")
    parser.add_argument("--top", type=int, default=8, help="functions shown per core")
    args = parser.parse_args(argv)
    short_tokens, long_tokens = (int(n) for n in args.tokens.split(","))
    bind = can_bind_cpuinfo()
    table = symbols(NM["aarch64"], args.binary)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for key in args.cores.split(","):
            core = next((c for c in CORES if c.key == key and c.arch == "aarch64"), None)
            if core is None:
                raise SystemExit(f"arm-bench: no aarch64 core `{key}` (arm_parity.CORES)")
            runner = qemu_runner(core, bind, scratch)
            emulator = runner.prefix[1:]
            runs = []
            for tokens in (short_tokens, long_tokens):
                out = scratch / f"{key}-{tokens}.counts"
                runner.prefix = [DYNAMIC_QEMU["aarch64"], "-plugin", f"{args.plugin},out={out}", *emulator]
                command = runner.command(args.binary, [
                    "caption", "--json", "--model", args.bundle, "--precision", args.precision, "--beam", "1",
                    "--max-tokens", str(tokens), args.image,
                ])
                done = subprocess.run(command, capture_output=True, text=True, env=runner.environ(), check=False)
                if done.returncode != 0:
                    raise SystemExit(f"arm-bench: {key}: capdec failed: {done.stderr[-2000:]}")
                made = len(json.loads(done.stdout)["tokens"])
                runs.append((made, attribute(out.read_text(), table, PIE_BASE)))
            (few, first), (many, second) = runs
            if many <= few:
                raise SystemExit(f"arm-bench: {key}: the captions stopped at {few} and {many} tokens: give longer")
            total_first, total_second = sum(first.values()), sum(second.values())
            step = (total_second - total_first) / (many - few)
            print(f"### {core.board} ({key}), {args.precision}, bundle {args.bundle}")
            print()
            print(f"- greedy caption of {few} token(s): {total_first / 1e6:,.1f} M instructions; "
                  f"of {many}: {total_second / 1e6:,.1f} M")
            print(f"- decoder token step: {step / 1e6:,.2f} M instructions")
            print()
            print("| function (per token step) | M instructions | share |")
            print("|---|---|---|")
            growth = {name: (second[name] - first[name]) / (many - few) for name in second}
            for name, count in sorted(growth.items(), key=lambda item: -item[1])[: args.top]:
                print(f"| `{short(name)}` | {count / 1e6:,.2f} | {count / step:.0%} |")
            print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
