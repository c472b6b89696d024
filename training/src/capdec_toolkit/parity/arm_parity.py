"""ARM parity: the aarch64 and armv7 builds, run under qemu-user, must caption like the x86 build, token for token.

    scripts/arm-parity [--targets aarch64,armv7] [--cores a53,a76,...] [--no-build] [--jobs N] [--rss]

Builds what is missing (scripts/cross-build, profile `device`; the x86 reference with `cargo build --release`),
then captions the fixture bundle's golden images and the demo bundle's test scenes (skipped, with a message, when
models/demo is absent) with every build, for fp32 and int8, greedy and beam search, and compares the token ids of
every caption with the x86 build's: exactly, except for int8 near-ties on bundles other than the fixture (see
TOLERANCE_RULE below for why and how many). The x86 build also runs with tract's AVX-512 and AVX kernels switched
off, and our int8 kernel on AVX-VNNI, AVX2 or tract's with them, under the same rule: it shows what different
float kernels alone change (our int8 kernels are exact, so they change nothing). Exits 1 on a difference beyond the
rule, 2 when something needed is missing. The aarch64 cores and the demo bundle take about 20 minutes on two cores.

tract picks its matrix kernels, and we our int8 kernel, at run time from /proc/cpuinfo and the kernel's HWCAPs,
so each ARM build runs under several emulated cores (qemu's `-cpu` sets the instructions and HWCAPs). qemu-user shows the host's
/proc/cpuinfo to the guest, so where a private mount namespace is allowed (root), each core also gets the
/proc/cpuinfo of a real board bound over /proc/cpuinfo, and tract detects the core exactly as on the board;
otherwise tract's overrides (TRACT_CPU_AARCH64_OVERRIDE_CPU_PART, TRACT_CPU_ARM32_NEON) stand in, and the
armv7 Cortex-A7/A9 cost models, which only read /proc/cpuinfo, are not reached. For each core a short daemon
run logs what tract detected (CPU kind, instruction sets, kernel tiers).

--rss: also the daemon's peak resident memory (VmHWM) with the demo bundle (else the fixture): the ARM builds
under qemu, x86 natively and x86 under qemu-x86_64, whose difference is qemu's own overhead (--rss-only: just that).

Environment: CARGO_TARGET_DIR as cargo; X86_CAPDEC=PATH uses that x86 binary as the reference instead of
building one (any x86 build computes the same numbers: Rust never fuses or reorders float operations).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[4]  # training/src/capdec_toolkit/parity/arm_parity.py
TRIPLES = {"aarch64": "aarch64-unknown-linux-gnu", "armv7": "armv7-unknown-linux-gnueabihf"}
QEMU = {"aarch64": "qemu-aarch64-static", "armv7": "qemu-arm-static"}
SYSROOT = {"aarch64": "/usr/aarch64-linux-gnu", "armv7": "/usr/arm-linux-gnueabihf"}

# /proc/cpuinfo as the boards print it (one core shown; tract reads the `Features` line and the `CPU part`).
A64_V80 = "fp asimd evtstrm crc32 cpuid"
A64_V82 = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
)
A32_V7 = "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm"


def cpuinfo(arch: str, features: str, part: str, model: str = "") -> str:
    if arch == "aarch64":
        head = "processor\t: 0\nBogoMIPS\t: 108.00\n"
        architecture = 8
    else:
        head = f"processor\t: 0\nmodel name\t: {model}\nBogoMIPS\t: 38.40\n"
        architecture = 7
    return (
        f"{head}Features\t: {features}\nCPU implementer\t: 0x41\nCPU architecture: {architecture}\n"
        f"CPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 1\n\nHardware\t: BCM2835\n"
    )


@dataclass
class Core:
    key: str
    arch: str
    qemu_cpu: str
    board: str
    cpuinfo: str
    # Used in every run (tract's switches under test).
    env: dict[str, str] = field(default_factory=dict)
    # Stand-ins for the /proc/cpuinfo above when no mount namespace can be made.
    fallback_env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    # The matrix kernels for this core: float products as tract-linalg 0.23.9's dispatch (arm64/mod.rs,
    # arm32/mod.rs) picks them, then int8's products: ours on aarch64 (runtime/kernels/int8_matmul), tract's i32
    # kernels on armv7 (n > 1; one-column products take the 64x1/32x1 kernels).
    kernels: str = ""


CORES = [
    Core("a53", "aarch64", "cortex-a53", "Pi 3, Zero 2 W (Cortex-A53)",
         cpuinfo("aarch64", A64_V80, "0xd03"), fallback_env={"TRACT_CPU_AARCH64_OVERRIDE_CPU_PART": "0xd03"},
         kernels="f32: Cortex-A53 kernels by cost model; int8: ours, smull/sadalp"),
    Core("a72", "aarch64", "cortex-a72", "Pi 4 (Cortex-A72)",
         cpuinfo("aarch64", A64_V80, "0xd08"), fallback_env={"TRACT_CPU_AARCH64_OVERRIDE_CPU_PART": "0xd08"},
         kernels="f32: generic 8x8/16x4; int8: ours, smull/sadalp"),
    Core("a76", "aarch64", "cortex-a76", "Pi 5 (Cortex-A76, dotprod)",
         cpuinfo("aarch64", A64_V82, "0xd0b"), fallback_env={"TRACT_CPU_AARCH64_OVERRIDE_CPU_PART": "0xd0b"},
         kernels="f32: generic 8x8/16x4; int8: ours, SDOT (dotprod)"),
    Core("a76-nodot", "aarch64", "cortex-a76", "Pi 5, TRACT_DOTPROD_DISABLE=1, CAPDEC_INT8_KERNEL=neon",
         cpuinfo("aarch64", A64_V82, "0xd0b"), env={"TRACT_DOTPROD_DISABLE": "1", "CAPDEC_INT8_KERNEL": "neon"},
         fallback_env={"TRACT_CPU_AARCH64_OVERRIDE_CPU_PART": "0xd0b"},
         kernels="f32: generic 8x8/16x4; int8: ours, smull/sadalp"),
    Core("a55", "aarch64", "cortex-a76", "RK3566-class (Cortex-A55 kernels)",
         cpuinfo("aarch64", A64_V82, "0xd05"), fallback_env={"TRACT_CPU_AARCH64_OVERRIDE_CPU_PART": "0xd05"},
         note="qemu 7.2 has no cortex-a55: the a76 model runs it (same instructions), /proc/cpuinfo says A55",
         kernels="f32: Cortex-A55 kernels by cost model; int8: ours, SDOT"),
    Core("a7", "armv7", "cortex-a7", "Pi 2 (Cortex-A7, NEON)",
         cpuinfo("armv7", A32_V7, "0xc07", "ARMv7 Processor rev 5 (v7l)"),
         fallback_env={"TRACT_CPU_ARM32_NEON": "true"},
         kernels="f32: NEON, Cortex-A7 cost model (CPU part 0xc07); int8: ours, vmull/vpadal"),
    Core("a15", "armv7", "cortex-a15", "32-bit Pi OS on a Pi 3/4 (generic NEON)",
         cpuinfo("armv7", A32_V7 + " crc32", "0xd08", "ARMv7 Processor rev 3 (v7l)"),
         fallback_env={"TRACT_CPU_ARM32_NEON": "true"},
         note="qemu-arm has no Cortex-A53/A72: the A15 model runs their 32-bit code; /proc/cpuinfo says A72",
         kernels="f32: NEON generic 8x6/8x4; int8: ours, vmull/vpadal"),
    Core("a9", "armv7", "cortex-a9", "Cortex-A9 boards (NEON)",
         cpuinfo("armv7", "half thumb fastmult vfp edsp neon vfpv3 tls vfpd32", "0xc09",
                 "ARMv7 Processor rev 10 (v7l)"),
         fallback_env={"TRACT_CPU_ARM32_NEON": "true"},
         kernels="f32: NEON, Cortex-A9 cost model (CPU part 0xc09); int8: ours, vmull/vpadal"),
    # qemu's cores all have NEON: this one's /proc/cpuinfo hides it from tract, and our kernel (which reads the
    # HWCAPs, where qemu shows it) is turned off as a board without NEON would have it.
    Core("vfp", "armv7", "cortex-a15", "no NEON (VFPv2 kernels), CAPDEC_INT8_KERNEL=tract",
         cpuinfo("armv7", "half thumb fastmult vfp edsp vfpv3 tls vfpv4 idiva idivt", "0xc0f",
                 "ARMv7 Processor rev 3 (v7l)"),
         env={"CAPDEC_INT8_KERNEL": "tract"},
         fallback_env={"TRACT_CPU_ARM32_NEON": "false"},
         kernels="f32: VFPv2 4x4; i32: portable Rust 4x2"),
]

SEARCHES = [("greedy", ["--beam", "1"]), ("beam", [])]  # beam: the bundle's own beam size


def say(message: str) -> None:
    print(message, flush=True)


def fail(message: str, code: int = 2) -> None:
    print(f"arm-parity: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def build(args: argparse.Namespace, arches: list[str]) -> tuple[Path, dict[str, Path]]:
    x86 = os.environ.get("X86_CAPDEC")
    if x86:
        x86_bin = Path(x86)
    else:
        x86_bin = target_dir() / "release" / "capdec"
        if not args.no_build:
            say("== building the x86 reference: cargo build --release")
            subprocess.run(["cargo", "build", "--release", "--locked"], cwd=REPO, check=True)
    arm = {}
    for arch in arches:
        arm[arch] = target_dir() / TRIPLES[arch] / args.profile / "capdec"
        if not args.no_build:
            say(f"== building {TRIPLES[arch]}: scripts/cross-build --profile {args.profile} {arch}")
            subprocess.run([str(REPO / "scripts/cross-build"), "--profile", args.profile, arch], cwd=REPO,
                           check=True)
    for path in [x86_bin, *arm.values()]:
        if not path.is_file():
            fail(f"{path} does not exist (run without --no-build)")
    return x86_bin, arm


def can_bind_cpuinfo() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --bind /proc/version /proc/cpuinfo && head -c0 /proc/cpuinfo"],
        capture_output=True)
    return probe.returncode == 0


@dataclass
class Runner:
    """How to start one build: natively, or under qemu as one core."""
    name: str
    prefix: list[str]
    env: dict[str, str]
    cpuinfo_file: Path | None = None

    def command(self, binary: Path, args: list[str]) -> list[str]:
        command = [*self.prefix, str(binary), *args]
        if self.cpuinfo_file is not None:
            # A private mount namespace in which the board's /proc/cpuinfo is bound over the host's.
            command = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /proc/cpuinfo && exec "$@"',
                       str(self.cpuinfo_file), *command]
        return command

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACT_") and k != "CAPDEC_INT8_KERNEL"}
        env.update(self.env)
        return env


def qemu_runner(core: Core, bind: bool, scratch: Path) -> Runner:
    prefix = [QEMU[core.arch], "-cpu", core.qemu_cpu, "-L", SYSROOT[core.arch]]
    env = dict(core.env)
    cpuinfo_file = None
    if bind:
        cpuinfo_file = scratch / f"cpuinfo-{core.key}"
        cpuinfo_file.write_text(core.cpuinfo)
    else:
        env.update(core.fallback_env)
    return Runner(core.key, prefix, env, cpuinfo_file)


@dataclass
class Job:
    bundle: str
    precision: str
    search: str
    search_args: list[str]
    images: list[str]


def caption(runner: Runner, binary: Path, job: Job) -> tuple[dict[str, dict], float, str]:
    """Captions all of a job's images in one process; returns per file {tokens, mean_log_prob}."""
    args = ["caption", "--model", str(REPO / "models" / job.bundle), "--precision", job.precision,
            *job.search_args, "--json", *job.images]
    started = time.monotonic()
    done = subprocess.run(runner.command(binary, args), cwd=REPO, env=runner.environ(), capture_output=True,
                          text=True)
    seconds = time.monotonic() - started
    results = {}
    for line in done.stdout.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        results[record.get("file", "?")] = record
    problem = ""
    if done.returncode != 0 or len(results) != len(job.images):
        problem = f"exit {done.returncode}: {done.stderr.strip()[-600:]}"
    return results, seconds, problem


def jobs_for(bundles: list[str]) -> list[Job]:
    jobs = []
    for bundle in bundles:
        if bundle == "fixture-tiny":
            # The goldens' images; rocket.jpg once as JPEG (decoded here) and once as PIL's own crop.
            images = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests/data/images").iterdir()
                            if p.suffix in (".png", ".jpg"))
            images.append("tests/data/pil-crops/rocket.jpg.png")
        else:
            images = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests/data/demo-scenes").glob("*.png"))
        for precision in ("fp32", "int8"):
            for search, search_args in SEARCHES:
                jobs.append(Job(bundle, precision, search, search_args, images))
    return jobs


# int8 graphs quantize every activation at run time (DynamicQuantizeLinear: scale = range / 255, q = round(x /
# scale)). Float kernels differ in their last bits between architectures, and between x86's own kernel tiers
# (AVX-512, AVX2+FMA): any such difference moves q by a whole step where x / scale lies at a rounding boundary, a
# change ~10^4 times a float rounding error; where a model hesitates between two tokens, the token flips. The
# fixture bundle's goldens leave no such near-ties and stay exact; for other int8 bundles a few captions may
# differ, each as likely as the x86 one.
TOLERANCE_RULE = ("fp32 and the fixture: none; other int8 bundles: at most 5% of a run's captions, each with a mean "
                  "log-probability within 0.05 of the x86 caption's")


def tolerance(job: Job, differing: list) -> bool:
    if not differing:
        return True
    if job.precision != "int8" or job.bundle == "fixture-tiny":
        return False
    if len(differing) > 0.05 * len(job.images):
        return False
    return all(abs(a["mean_log_prob"] - b["mean_log_prob"]) <= 0.05 for _, _, a, b in differing)


def x86_tiers() -> list[tuple[str, dict[str, str]]]:
    """The x86 build again with tract's wider kernels switched off, and our int8 kernel with them (the AVX2 one, or
    tract's own where AVX2 is off), to show what the kernel tiers change."""
    if os.uname().machine != "x86_64":
        return []
    flags = Path("/proc/cpuinfo").read_text()
    tiers = []
    no_avx512 = "-avx512f,-avx512vnni,-avx512fp16,-amx-int8,-amx-bf16"
    if " avx_vnni" in flags:
        tiers.append(("x86-avx-vnni", {"TRACT_CPU_ISA": no_avx512, "CAPDEC_INT8_KERNEL": "avx-vnni"}))
    if " avx512f" in flags:
        tiers.append(("x86-avx2", {"TRACT_CPU_ISA": no_avx512, "CAPDEC_INT8_KERNEL": "avx2"}))
    if " fma" in flags:
        tiers.append(("x86-sse", {"TRACT_CPU_ISA": no_avx512 + ",-avxvnni,-fma,-avx2,-avx,-f16c",
                                  "CAPDEC_INT8_KERNEL": "tract"}))
    return tiers


def core_of(runners: list, name: str) -> Core | None:
    return next((c for r, _, c in runners if r.name == name), None)


# -- what tract detected: a short daemon run per core, logging at trace level -------------------------------------

DAEMON_CONFIG = """\
log_level = "trace"
[model]
bundle = "{bundle}"
precision = "{precision}"
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_min_s = 60
reconnect_max_s = 60
[home_assistant]
discovery = false
[[camera]]
name = "probe"
interval_s = 3600
skip_if_similarity_above = 1.0
[camera.file]
path = "{image}"
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon(runner: Runner, binary: Path, bundle: str, precision: str, image: str, scratch: Path,
           timeout: float = 900) -> tuple[list[str], int | None, str, dict[str, int]]:
    """Runs `capdec run` until its first caption; returns its log lines, the peak RSS in KiB, a problem, and the
    resident KiB by kind of mapping."""
    config = scratch / f"daemon-{runner.name}-{bundle}-{precision}.toml"
    # No broker listens on the port: the caption waits in the offline queue, which is all this needs.
    config.write_text(DAEMON_CONFIG.format(bundle=REPO / "models" / bundle, precision=precision,
                                           port=free_port(), image=REPO / image))
    log_path = config.with_suffix(".log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(runner.command(binary, ["run", "--config", str(config)]), cwd=REPO,
                                   env={**runner.environ(), "CAPDEC_LOG": "trace"}, stdout=log,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    peak, problem = None, ""
    breakdown: dict[str, int] = {}
    while True:
        time.sleep(0.2)
        text = log_path.read_text(errors="replace")
        # With no broker the caption is queued ("caption queued: the MQTT broker is unreachable").
        if "caption queued" in text or "caption published" in text or "captioning failed" in text:
            peak = vm_hwm_kib(process.pid)
            breakdown.update(smaps_breakdown(process.pid))
            break
        if process.poll() is not None:
            problem = f"the daemon exited ({process.returncode}) before captioning"
            break
        if time.monotonic() > deadline:
            problem = "no caption in time"
            break
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return log_path.read_text(errors="replace").splitlines(), peak, problem, breakdown


def smaps_breakdown(pid: int) -> dict[str, int]:
    """Resident KiB now, by kind of mapping: under qemu-user, what is qemu's own and what the program's."""
    kinds: dict[str, int] = {}
    kind = "other"
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return kinds
    for line in text.splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            perms, path = fields[1], (fields[5] if len(fields) > 5 else "")
            if "qemu-" in path:
                kind = "qemu binary"
            elif "x" in perms and not path:
                kind = "qemu translated code"
            elif path.startswith("/"):
                kind = "program files"
            else:
                kind = "anonymous"
        elif fields and fields[0] == "Rss:":
            kinds[kind] = kinds.get(kind, 0) + int(fields[1])
    return kinds


def vm_hwm_kib(pid: int) -> int | None:
    """Peak RSS of the process and its children (unshare -> sh -> qemu exec's into one process)."""
    peak = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak or None


TRACT_LINES = [
    (re.compile(r'msg="CPU optimisation: (\w+)"'), "kind {}"),
    (re.compile(r'msg="ISA: ([^"]*)"'), "isa {}"),
    (re.compile(r'msg="mmm tiers for [^:]*: ([^"]*)"'), "tiers {}"),
]


def tract_summary(lines: list[str]) -> str:
    found = []
    for line in lines:
        for pattern, form in TRACT_LINES:
            match = pattern.search(line)
            if match:
                text = form.format(match.group(1).replace("&gt;", ">"))
                if text not in found:
                    found.append(text)
    return "; ".join(found) or "(tract logged nothing)"


# -- main ---------------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="aarch64,armv7", help="aarch64,armv7 (default both)")
    parser.add_argument("--cores", default="", help="only these cores: " + ",".join(c.key for c in CORES))
    parser.add_argument("--bundles", default="fixture-tiny,demo")
    parser.add_argument("--profile", default="device")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="qemu processes at once")
    parser.add_argument("--no-probe", action="store_true", help="skip the daemon runs that log tract's choices")
    parser.add_argument("--rss", action="store_true", help="also measure the daemon's peak RSS")
    parser.add_argument("--rss-only", action="store_true", help="only measure the daemon's peak RSS")
    parser.add_argument("--no-x86-tiers", action="store_true",
                        help="skip the x86 runs with tract's AVX-512/AVX kernels switched off")
    args = parser.parse_args()

    arches = [a for a in args.targets.split(",") if a]
    for arch in arches:
        if arch not in TRIPLES:
            fail(f"unknown target {arch} (aarch64, armv7)")
        if not shutil.which(QEMU[arch]):
            fail(f"{QEMU[arch]} not found: apt-get install qemu-user-static")
        if not Path(SYSROOT[arch]).is_dir():
            package = "libc6-dev-arm64-cross" if arch == "aarch64" else "libc6-dev-armhf-cross"
            fail(f"{SYSROOT[arch]} missing: apt-get install {package}")
    wanted = [c for c in args.cores.split(",") if c]
    cores = [c for c in CORES if c.arch in arches and (not wanted or c.key in wanted)]
    if not cores:
        fail("no core selected")

    bundles = []
    for bundle in [b for b in args.bundles.split(",") if b]:
        if (REPO / "models" / bundle / "bundle.toml").is_file():
            bundles.append(bundle)
        else:
            say(f"== models/{bundle} is absent: skipped (its captions are not compared)")
    if not bundles:
        fail("no bundle to caption")

    x86_bin, arm_bins = build(args, arches)
    bind = can_bind_cpuinfo()
    say("== /proc/cpuinfo: " + ("each core gets its board's, in a private mount namespace" if bind else
        "cannot bind over /proc/cpuinfo here (needs root): tract's override variables stand in"))

    scratch = Path(tempfile.mkdtemp(prefix="arm-parity-"))
    if args.rss_only:
        rss(x86_bin, arm_bins, bundles, scratch)
        return 0
    runners: list[tuple[Runner, Path, Core | None]] = [(Runner("x86_64", [], {}), x86_bin, None)]
    if not args.no_x86_tiers:
        runners += [(Runner(name, [], env), x86_bin, None) for name, env in x86_tiers()]
    runners += [(qemu_runner(c, bind, scratch), arm_bins[c.arch], c) for c in cores]
    jobs = jobs_for(bundles)
    say(f"== captioning: {len(jobs)} runs per build ({', '.join(bundles)}; fp32, int8; greedy, beam), "
        f"{len(runners)} builds/cores, {args.jobs} at a time")

    started = time.monotonic()
    results: dict[tuple[str, int], tuple[dict[str, dict[str, Any]], float, str]] = {}
    probes: dict[str, tuple[list[str], int | None, str, dict[str, int]]] = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures: dict[concurrent.futures.Future[Any], tuple[str, int]] = {}
        for runner, binary, _ in runners:
            for index, job in enumerate(jobs):
                futures[pool.submit(caption, runner, binary, job)] = (runner.name, index)
            if not args.no_probe and core_of(runners, runner.name) is not None:
                futures[pool.submit(daemon, runner, binary, "fixture-tiny", "int8", "tests/data/images/chelsea.png",
                                    scratch)] = (runner.name, -1)
        for future in concurrent.futures.as_completed(futures):
            name, index = futures[future]
            if index < 0:
                probes[name] = future.result()
            else:
                results[(name, index)] = future.result()
    say(f"== done in {time.monotonic() - started:.0f} s")

    # Compare every caption with the x86 one.
    failures: list[str] = []
    accepted: list[str] = []
    columns = [f"{j.bundle} {j.precision} {j.search}" for j in jobs]
    table = []
    for runner, _, core in runners:
        row = []
        for index, job in enumerate(jobs):
            got, seconds, problem = results[(runner.name, index)]
            want = results[("x86_64", index)][0]
            if problem:
                failures.append(f"{runner.name} {columns[index]}: {problem}")
            same_tokens, drift, differing = 0, 0.0, []
            for image in job.images:
                a, b = want.get(image), got.get(image)
                if a is None or b is None or "tokens" not in a or "tokens" not in b:
                    continue
                if a["tokens"] == b["tokens"]:
                    same_tokens += 1
                    drift = max(drift, abs(a["mean_log_prob"] - b["mean_log_prob"]))
                    continue
                first = next((i for i, (x, y) in enumerate(zip(a["tokens"], b["tokens"])) if x != y),
                             min(len(a["tokens"]), len(b["tokens"])))
                differing.append((image, first, a, b))
            tolerated = tolerance(job, differing)
            for image, first, a, b in differing:
                message = (f"{runner.name} {columns[index]} {image}: token {first} differs: x86 "
                           f"{a['tokens'][first:first + 4]}.. (mean log-prob {a['mean_log_prob']:.4f}) vs "
                           f"{b['tokens'][first:first + 4]}.. ({b['mean_log_prob']:.4f})")
                (accepted if tolerated else failures).append(message)
            mark = "" if not differing else (" ~" if tolerated else " X")
            row.append((same_tokens, drift, len(job.images), seconds, mark))
        table.append((runner, core, row))

    say("")
    say("Captions whose token ids equal the x86_64 build's, of all (X: a difference; ~: int8 near-ties within the")
    say("tolerance, see below). Under each: the largest difference of a same-token caption's mean log-probability")
    say("from x86's (0: bit-identical) and the run's seconds. x86-avx2/x86-sse: the x86 build with tract's AVX-512")
    say("(and AVX/FMA) kernels switched off (TRACT_CPU_ISA); ARM columns: cores, listed below the table.")
    width = max(len(c) for c in columns)
    say(f"{'':<{width}}  " + " ".join(f"{r.name:>9}" for r, _, _ in table))
    for index, column in enumerate(columns):
        cells, details = [], []
        for _, _, row in table:
            same, drift, total, seconds, mark = row[index]
            cells.append(f"{same}/{total}{mark}".rjust(9))
            details.append((f"{drift:.0e}" if drift else "0") + f" {seconds:3.0f}s".rjust(5))
        say(f"{column:<{width}}  " + " ".join(cells))
        say(f"{'':<{width}}  " + " ".join(d.rjust(9) for d in details))

    # Between the cores of one ARM build: do tract's kernel choices change any number?
    say("")
    say("Between the cores of one build (captions with the same token ids and bit-identical log-probabilities):")
    for arch in arches:
        arch_runners = [(r, c) for r, _, c in runners if c is not None and c.arch == arch]
        if len(arch_runners) < 2:
            continue
        base = arch_runners[0][0].name
        for runner, _ in arch_runners[1:]:
            counts: dict[str, tuple[int, int]] = {}
            for index, job in enumerate(jobs):
                a_all, b_all = results[(base, index)][0], results[(runner.name, index)][0]
                same, total = counts.get(job.precision, (0, 0))
                for image in job.images:
                    a, b = a_all.get(image, {}), b_all.get(image, {})
                    total += 1
                    same += ("tokens" in a and a.get("tokens") == b.get("tokens")
                             and a.get("mean_log_prob") == b.get("mean_log_prob"))
                counts[job.precision] = (same, total)
            say(f"  {runner.name} vs {base}: " + ", ".join(f"{p} {s}/{t}" for p, (s, t) in counts.items()))
    say("")
    say("Cores (qemu -cpu; what tract detected, from its log in a short `capdec run`):")
    for runner, core, _ in table:
        if core is None:
            continue
        extra = " ".join(f"{k}={v}" for k, v in runner.env.items())
        line = f"  {core.key:<10} {core.arch} -cpu {core.qemu_cpu:<10} {core.board}"
        line += f" [{extra}]" if extra else ""
        say(line)
        if core.note:
            say(f"             note: {core.note}")
        if core.kernels:
            say(f"             kernels: {core.kernels}")
        if core.key in probes:
            lines, _, problem, _ = probes[core.key]
            say(f"             tract: {tract_summary(lines)}" + (f" ({problem})" if problem else ""))
            if problem:
                failures.append(f"{core.key} daemon probe: {problem}: " + " | ".join(lines[-3:]))

    if args.rss:
        say("")
        rss(x86_bin, arm_bins, bundles, scratch)

    if accepted:
        say("")
        say(f"int8 near-ties accepted ({len(accepted)}; rule: {TOLERANCE_RULE}):")
        for message in accepted:
            say(f"  {message}")
    say("")
    if failures:
        say(f"ARM parity FAILED ({len(failures)}):")
        for f in failures:
            say(f"  {f}")
        return 1
    say("ARM parity OK: every ARM build and core gives the x86 token ids" +
        (" (int8 near-ties above excepted)" if accepted else ""))
    return 0


def rss(x86_bin: Path, arm_bins: dict[str, Path], bundles: list[str], scratch: Path) -> None:
    bundle = "demo" if "demo" in bundles else bundles[0]
    image = "tests/data/demo-scenes/scene-000.png" if bundle == "demo" else "tests/data/images/chelsea.png"
    say(f"Daemon peak RSS (VmHWM after its first caption; {bundle} bundle, one file camera, beam = bundle's):")
    runs = [("x86_64 native", Runner("x86-native", [], {}), x86_bin)]
    if shutil.which("qemu-x86_64-static"):
        runs.append(("x86_64 under qemu-x86_64", Runner("x86-qemu", ["qemu-x86_64-static"], {}), x86_bin))
    for arch, binary in arm_bins.items():
        cpu = "cortex-a76" if arch == "aarch64" else "cortex-a15"
        runs.append((f"{arch} under qemu -cpu {cpu}", Runner(f"{arch}-rss", [QEMU[arch], "-cpu", cpu, "-L",
                                                                                SYSROOT[arch]], {}), binary))
    say("  (then resident MiB by mapping: qemu's binary and translated code are the emulator's; anonymous holds")
    say("  the program's heap, and under qemu also the emulator's own allocations)")
    for precision in ("int8", "fp32"):
        for label, runner, binary in runs:
            _, peak, problem, kinds = daemon(runner, binary, bundle, precision, image, scratch)
            value = f"{peak / 1024:.1f} MiB" if peak else "?"
            parts = ", ".join(f"{k} {v / 1024:.1f}" for k, v in sorted(kinds.items()))
            say(f"  {precision}  {label:<34} peak {value:>10}   now: {parts}" + (f" ({problem})" if problem else ""))


if __name__ == "__main__":
    sys.exit(main())
