"""Instructions the ARM builds execute under qemu-user, counted by a TCG plugin (scripts/arm-bench.d/count.c) as
the same emulated cores as ARM parity (`arm_parity.CORES`, each with its board's /proc/cpuinfo where a mount
namespace can be made), attributed to the functions of a non-stripped build (`nm`). Counts are deterministic:
comparable across runs and machines, unlike times under emulation.

Each core runs `capdec bench` at one thread, once on tract's int8 kernels (CAPDEC_INT8_KERNEL=tract) and once on
ours (the one the core picks); the bench calls `capdec_bench_mark` before and after every sample, the plugin notes
its running total at each call, so every stage's count is per sample: encode, map, decoder prefix step, token step
(one row), beam step (five rows), whole greedy and beam captions. Beside them, the minimum for the stage's int8
products, from the multiply-adds and weights the bench reports:

    with the dot product (SDOT):  multiply-adds / 16 + weights / 16       one SDOT per 16 multiply-adds, one
                                                                      16-byte load per 16 weights
    without (smull/sadalp):     4 x multiply-adds / 16 + weights / 16   smull, smull2 and two sadalp per 16
                                                                      (armv7: vmull.s8 twice, vpadal.s16 twice)

and, stricter, the same with one `ldp` (a 32-byte load) per 32 weights: weights / 32. For fp32 (tract's float
kernels, `fmla` by 4 lanes, 4-byte weights):

    multiply-adds / 4 + weights / 4                                     one fmla per 4 multiply-adds, one 16-byte
                                                                      load per 4 weights

with the multiply-adds and weights of the same bundle's int8 products (one more int8 run: the same matrices).

Everything else a stage does (normalisation, attention over the past, activations, quantization) is above it.

With `--onnxruntime LIBRARY` (the aarch64 wheel's libonnxruntime, scripts/onnxruntime-library --arch aarch64) a
third run puts the networks on onnxruntime under the same search (`capdec bench --onnxruntime`): what a user
would otherwise pick, counted the same way.
Run by scripts/arm-bench, on the system Python (standard library only)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .arm_parity import CORES, SYSROOT, Core, can_bind_cpuinfo, qemu_runner

# Where qemu-user loads a position-independent guest program (`qemu-arm -d page` prints it).
PIE_BASE = {"aarch64": 0x5500000000, "armv7": 0x40000000}
OUTSIDE = "[outside capdec and its libraries' exported functions]"
DYNAMIC_QEMU = {"aarch64": "qemu-aarch64", "armv7": "qemu-arm"}
NM = {"aarch64": "aarch64-linux-gnu-nm", "armv7": "arm-linux-gnueabihf-nm"}
MARK = "capdec_bench_mark"
# `capdec bench`'s stages in its order, and whether a run of it is one sample per token (the decoder steps).
STAGES = [("preprocess", False), ("encode", False), ("map", False), ("decoder prefix step", False),
          ("decoder token step", True), ("decoder beam step", True), ("caption greedy", False),
          ("caption beam", False), ("decode beam", False)]
KERNEL_VARIABLE = "CAPDEC_INT8_KERNEL"
# Cores whose HWCAPs have the dot product (qemu's -cpu), and so run the SDOT kernel.
DOT_PRODUCT_CPUS = {"cortex-a76", "max"}


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
        # An OUTSIDE entry marks where a mapped file's functions end.
        by_function[table[low][1]] += int(executed)
    return by_function


LINK_MAP = re.compile(r"file=(\S+) \[0\];\s+generating link map\s*\n\s*\d+:\s+dynamic: 0x[0-9a-f]+\s+"
                      r"base: 0x([0-9a-f]+)\s+size: 0x([0-9a-f]+)")


def library_symbols(loader_log: str, nm: str, sysroot: Path) -> list[tuple[int, str]]:
    """The exported functions of the shared libraries the guest's loader reported (LD_DEBUG=files) where it put
    them, each followed by an OUTSIDE entry at its end. Internal functions (a libc's memcpy variants) count to
    the exported one before them."""
    table: list[tuple[int, str]] = []
    for name, base_text, size_text in LINK_MAP.findall(loader_log):
        # A library the program opened by its path (onnxruntime) is named by it.
        path = Path(name) if Path(name).is_absolute() else sysroot / "lib" / name
        if not path.is_file():
            continue
        base = int(base_text, 16)
        listed = subprocess.run([nm, "-D", "-n", "--defined-only", str(path)], capture_output=True, text=True,
                                check=True).stdout
        for line in listed.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[1] in "tTwWi":
                table.append((base + int(parts[0], 16), f"{parts[2]} [{name}]"))
        table.append((base + int(size_text, 16), OUTSIDE))
    return table


def short(name: str, width: int = 96) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


@dataclass
class StageCount:
    name: str
    instructions: float
    """Per sample, the mean."""
    multiply_adds: float
    weights: float


def window(stage: str, tokens: int) -> int:
    """The mark that opens the last sample of a stage, in a bench run of one run and no warm-up."""
    names = [name for name, _ in STAGES]
    if stage not in names:
        raise SystemExit(f"arm-bench: no stage `{stage}` (stages: {', '.join(names)})")
    samples = [tokens if per_token else 1 for _, per_token in STAGES]
    last = sum(samples[: names.index(stage) + 1]) - 1
    return 2 * last


def stage_counts(report: dict, marks: list[int]) -> list[StageCount]:
    """Each stage's instructions per sample, from the bench's JSON report (one thread, no warm-up) and the plugin's
    marks: two per sample, stage after stage."""
    [threads] = report["threads"]
    stages = threads["stages"]
    if [stage["stage"] for stage in stages] != [name for name, _ in STAGES]:
        raise SystemExit("arm-bench: capdec bench's stages are not arm_counts.STAGES: update the list")
    expected = 2 * sum(stage["samples"] for stage in stages)
    if len(marks) != expected:
        raise SystemExit(f"arm-bench: {len(marks)} marks for {expected} (2 per sample): run the bench with "
                         "--threads 1 --warmup 0")
    counts, at = [], 0
    for stage in stages:
        samples = stage["samples"]
        spans = [marks[at + 2 * i + 1] - marks[at + 2 * i] for i in range(samples)]
        at += 2 * samples
        counts.append(StageCount(stage["stage"], sum(spans) / samples, stage["int8_multiply_adds"],
                                 stage["int8_weights"]))
    return counts


# Per kind of product: instructions per 16 multiply-adds, and bytes per weight.
FORMULAS = {"SDOT": (1, 1), "smull/sadalp": (4, 1), "fmla": (4, 4)}


def minimum(stage: StageCount, formula: str, load_bytes: int = 16) -> float:
    """The instructions the stage's products need at least (the module's formulas), with loads of 16 or 32
    bytes."""
    per_16, weight_bytes = FORMULAS[formula]
    return per_16 * stage.multiply_adds / 16 + stage.weights * weight_bytes / load_bytes


@dataclass
class Run:
    counts: list[StageCount]
    functions: Counter[str]


@dataclass
class Build:
    """One architecture's non-stripped capdec, its functions and where its mark is."""
    binary: Path
    table: list[tuple[int, str]]
    mark: int


def build_of(arch: str, binary: Path) -> Build:
    table = symbols(NM[arch], binary)
    mark = next((start for start, name in table if name == MARK), None)
    if mark is None:
        raise SystemExit(f"arm-bench: {binary} has no `{MARK}`")
    return Build(binary, table, mark)


def count(core: Core, kernel: str, args: argparse.Namespace, build: Build, scratch: Path,
          precision: str | None = None) -> Run:
    """`capdec bench` under the counting emulator as one core: the networks on tract with its kernels (`tract`)
    or ours (`ours`), or on onnxruntime (`onnxruntime`); at `args.precision` unless given another."""
    precision = precision or args.precision
    runner = qemu_runner(core, args.bind, scratch)
    out = scratch / f"{core.key}-{precision}-{kernel}.counts"
    opening = window(args.functions_of, args.tokens)
    # The guest's loader says where it put each library (on standard error, before anything is counted).
    base = PIE_BASE[core.arch]
    runner.prefix = [DYNAMIC_QEMU[core.arch], "-plugin",
                     f"{args.plugin},out={out},mark={base + build.mark:x},window={opening}", "-E", "LD_DEBUG=files",
                     *runner.prefix[1:]]
    command = runner.command(build.binary, [
        "bench", "--json", "--model", args.bundle, "--precision", precision, "--threads", "1",
        "--runs", "1", "--warmup", "0", "--tokens", str(args.tokens), "--beam", str(args.beam),
        *(["--onnxruntime", str(args.onnxruntime)] if kernel == "onnxruntime" else []),
    ])
    environ = runner.environ()
    environ.pop(KERNEL_VARIABLE, None)
    if kernel == "tract":
        environ[KERNEL_VARIABLE] = "tract"
    done = subprocess.run(command, capture_output=True, text=True, env=environ, check=False)
    if done.returncode != 0:
        raise SystemExit(f"arm-bench: {core.key}, {kernel}: capdec failed: {done.stderr[-2000:]}")
    lines = out.read_text().splitlines()
    marks = [int(line.split()[1]) for line in lines if line.startswith("mark ")]
    blocks = "\n".join(line.split(" ", 1)[1] for line in lines if line.startswith("window "))
    binary = [(base + start, name) for start, name in build.table]
    binary.append((binary[-1][0] + (1 << 20), OUTSIDE))
    everything = sorted(binary + library_symbols(done.stderr, NM[core.arch], Path(SYSROOT[core.arch])))
    return Run(stage_counts(json.loads(done.stdout), marks), attribute(blocks, everything, 0))


def print_core(core: Core, args: argparse.Namespace, runs: dict[str, Run], work: list[StageCount]) -> None:
    """One core's table; `work` holds each stage's products (multiply-adds and weights), for the minimum."""
    dot_product = core.qemu_cpu in DOT_PRODUCT_CPUS
    kernel = "sdot" if dot_product else "neon"
    formula = "fmla" if args.precision == "fp32" else "SDOT" if dot_product else "smull/sadalp"
    tracts, ours, theirs = runs["tract"], runs["ours"], runs.get("onnxruntime")
    print(f"### {core.board} ({core.key}, {core.arch}), {args.precision}, bundle {args.bundle}")
    print()
    print(f"M instructions per sample, one thread; steps at a past of up to {args.tokens} tokens, the beam step "
          f"{args.beam} rows; minimum: the products' ({formula} formula)")
    print()
    onnxruntime_header = ("", "") if theirs is None else (" onnxruntime | ours / onnxruntime |", "---|---|")
    print(f"| stage | tract | ours ({kernel}) | ours / tract |{onnxruntime_header[0]} minimum | ours / minimum | "
          "ours / minimum with `ldp` |")
    print(f"|---|---|---|---|{onnxruntime_header[1]}---|---|---|")
    for ix, (tract_count, mine) in enumerate(zip(tracts.counts, ours.counts)):
        least, strict = minimum(work[ix], formula), minimum(work[ix], formula, load_bytes=32)
        over = f"{mine.instructions / least:.2f}" if least else "-"
        over_strict = f"{mine.instructions / strict:.2f}" if strict else "-"
        onnxruntime_cells = ""
        if theirs is not None:
            other = theirs.counts[ix].instructions
            onnxruntime_cells = f" {other / 1e6:,.2f} | {mine.instructions / other:.2f} |"
        print(f"| {mine.name} | {tract_count.instructions / 1e6:,.2f} | {mine.instructions / 1e6:,.2f} | "
              f"{mine.instructions / tract_count.instructions:.2f} |{onnxruntime_cells} {least / 1e6:,.2f} | {over} | "
              f"{over_strict} |")
    print()
    for name, run in runs.items():
        total = sum(run.functions.values())
        engine = {"tract": "tract's kernels", "ours": "our kernels", "onnxruntime": "onnxruntime"}[name]
        print(f"Functions of one {args.functions_of} (the last sample) on {engine} ({total / 1e6:,.2f} M "
              "instructions):")
        print()
        print("| function | M instructions | share |")
        print("|---|---|---|")
        for function, executed in run.functions.most_common(args.top):
            print(f"| `{short(function)}` | {executed / 1e6:,.2f} | {executed / total:.0%} |")
        print()
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arm-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, required=True, help="a non-stripped aarch64 build of capdec")
    parser.add_argument("--armv7-binary", type=Path, help="a non-stripped armv7 build, for armv7 cores")
    parser.add_argument("--plugin", type=Path, required=True, help="count.so")
    parser.add_argument("--bundle", default="models/demo")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--cores", default="a53,a72,a76",
                        help="keys of arm_parity.CORES (aarch64 and armv7)")
    parser.add_argument("--tokens", type=int, default=4, help="tokens of every benchmarked caption")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--functions-of", default="decoder token step", help="the stage whose functions are shown")
    parser.add_argument("--top", type=int, default=6, help="functions shown per run")
    parser.add_argument("--jobs", type=int, default=2, help="emulators run at once")
    parser.add_argument("--record", type=Path, help="write our kernels' counts of the main stages to this JSON file")
    parser.add_argument("--onnxruntime", type=Path,
                        help="the aarch64 libonnxruntime: a third run with the networks on it (a build with the "
                             "onnxruntime feature)")
    parser.add_argument("--expect", type=Path,
                        help="fail unless our counts are those of this file (within its tolerance) and at or "
                             "under tract's")
    args = parser.parse_args(argv)
    args.bind = can_bind_cpuinfo()
    cores = []
    for key in args.cores.split(","):
        core = next((c for c in CORES if c.key == key), None)
        if core is None:
            raise SystemExit(f"arm-bench: no core `{key}` (arm_parity.CORES: {', '.join(c.key for c in CORES)})")
        cores.append(core)
    builds = {"aarch64": build_of("aarch64", args.binary)}
    if any(core.arch == "armv7" for core in cores):
        if args.armv7_binary is None:
            raise SystemExit("arm-bench: armv7 cores need --armv7-binary")
        builds["armv7"] = build_of("armv7", args.armv7_binary)
    ours: dict[str, list[StageCount]] = {}
    tracts: dict[str, list[StageCount]] = {}
    with tempfile.TemporaryDirectory() as scratch_name, ThreadPoolExecutor(args.jobs) as pool:
        scratch = Path(scratch_name)
        # onnxruntime publishes no armv7 build.
        engines = {core.key: ("tract", "ours", "onnxruntime") if args.onnxruntime and core.arch == "aarch64"
                   else ("tract", "ours") for core in cores}
        runs = {(core.key, engine): pool.submit(count, core, engine, args, builds[core.arch], scratch)
                for core in cores for engine in engines[core.key]}
        # fp32 graphs do the same products without our counters: an int8 run says how many.
        work_run = (pool.submit(count, cores[0], "ours", args, builds[cores[0].arch], scratch, "int8")
                    if args.precision == "fp32" else None)
        for core in cores:
            core_runs = {engine: runs[core.key, engine].result() for engine in engines[core.key]}
            print_core(core, args, core_runs,
                       work_run.result().counts if work_run else core_runs["ours"].counts)
            tracts[core.key], ours[core.key] = core_runs["tract"].counts, core_runs["ours"].counts
    if args.record:
        args.record.write_text(json.dumps(expected_counts(args, ours), indent=2) + "\n")
        print(f"arm-bench: recorded {args.record}", file=sys.stderr)
    if args.expect:
        problems = check(json.loads(args.expect.read_text()), args, tracts, ours)
        for problem in problems:
            print(f"arm-bench: {problem}", file=sys.stderr)
        if problems:
            print(f"arm-bench: counts differ from {args.expect}; if a change meant that, record them again: "
                  f"scripts/arm-bench --bundle {args.bundle} --cores {args.cores} --tokens {args.tokens} "
                  f"--record {args.expect}", file=sys.stderr)
            return 1
        print(f"arm-bench: counts as in {args.expect}", file=sys.stderr)
    return 0


# Stages whose counts `--record` keeps: the ones our kernels make (the rest is tract's and the search's).
CHECKED_STAGES = ["encode", "map", "decoder prefix step", "decoder token step", "decoder beam step"]
TOLERANCE = 0.03


def expected_counts(args: argparse.Namespace, ours: dict[str, list[StageCount]]) -> dict:
    return {
        "bundle": args.bundle, "precision": args.precision, "tokens": args.tokens, "beam": args.beam,
        "tolerance": TOLERANCE,
        "cores": {key: {c.name: round(c.instructions) for c in counts if c.name in CHECKED_STAGES}
                  for key, counts in ours.items()},
    }


def check(expected: dict, args: argparse.Namespace, tracts: dict[str, list[StageCount]],
          ours: dict[str, list[StageCount]]) -> list[str]:
    """What differs from a recorded run: each recorded stage of ours within the tolerance, and at or under
    tract's count."""
    settings = {"bundle": args.bundle, "precision": args.precision, "tokens": args.tokens, "beam": args.beam}
    problems = [f"recorded with {key} {expected.get(key)!r}, run with {value!r}"
                for key, value in settings.items() if expected.get(key) != value]
    tolerance = float(expected.get("tolerance", TOLERANCE))
    for key, stages in expected["cores"].items():
        if key not in ours:
            problems.append(f"{key}: recorded but not run (--cores)")
            continue
        counted = {c.name: c.instructions for c in ours[key]}
        theirs = {c.name: c.instructions for c in tracts[key]}
        for stage, recorded in stages.items():
            now = counted[stage]
            if abs(now - recorded) > tolerance * recorded:
                problems.append(f"{key}, {stage}: {now:,.0f} instructions, recorded {recorded:,} "
                                f"({now / recorded - 1:+.1%}, tolerance {tolerance:.0%})")
            if now > theirs[stage]:
                problems.append(f"{key}, {stage}: ours {now:,.0f} instructions, over tract's {theirs[stage]:,.0f}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
