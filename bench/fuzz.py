"""Coverage-guided fuzzing (atheris, libFuzzer) of the envelope, delivery-stream and bundle
parsers: the long run, and the bounded run the test suite makes.

    python -m bench.fuzz --executions 1000000 [--target envelope] [--seed 1] [--jobs 1]

Each target (tests/fuzz/_targets.py) runs in its own process, seeded from a copy of the
committed corpus (tests/fuzz/corpus/<target>/, written by `python -m tests.fuzz.make_corpus`),
with the Accord packages instrumented for coverage. A target that lets anything but its
parser's documented error escape is a crash: libFuzzer stops, writes the input to
`--artifacts` and the run exits 1. The summary gives, per target, the executions, the
crashes, the wall time and the executions per second, as a Markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
TARGET_NAMES = ("envelope", "delivery", "bundle")
MAX_LEN = {"envelope": 4096, "delivery": 8192, "bundle": 16384}


@dataclass(frozen=True)
class Result:
    target: str
    executions: int
    crashed: bool
    seconds: float
    artifacts: list[str]
    log_tail: str

    @property
    def rate(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0


def _child(target: str, argv: list[str]) -> None:
    """Inside the fuzzing process: instrument our packages, then hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["crypto", "gateway", "tests.fuzz"]):
        from tests.fuzz._targets import TARGETS

    run = TARGETS[target]
    atheris.Setup([sys.argv[0], *argv], run)
    atheris.Fuzz()


def run_target(
    target: str, executions: int, *, seed: int, artifacts: Path, timeout: float | None = None
) -> Result:
    """One target for `executions` inputs in a child process; returns what it did."""
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"accord-fuzz-{target}-") as work:
        corpus = Path(work) / "corpus"
        shutil.copytree(CORPUS / target, corpus)
        argv = [
            f"-runs={executions}",
            f"-seed={seed}",
            f"-max_len={MAX_LEN[target]}",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/{target}-",
            "-rss_limit_mb=1024",
            "-timeout=20",
            str(corpus),
        ]
        command = [sys.executable, "-m", "bench.fuzz", "--child", target, "--", *argv]
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        seconds = time.monotonic() - started
    log = done.stdout + done.stderr
    found = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    crashed = done.returncode != 0
    return Result(
        target=target,
        executions=int(found[-1]) if found else 0,
        crashed=crashed,
        seconds=seconds,
        artifacts=sorted(str(p) for p in artifacts.glob(f"{target}-*")),
        log_tail="\n".join(log.splitlines()[-40:]),
    )


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--child"]:
        _child(args_in[1], args_in[3:] if args_in[2:3] == ["--"] else args_in[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--target", choices=TARGET_NAMES, action="append")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    args = parser.parse_args(args_in)
    results = []
    for target in args.target or TARGET_NAMES:
        result = run_target(target, args.executions, seed=args.seed, artifacts=args.artifacts)
        results.append(result)
        print(
            f"{target}: {result.executions} executions, "
            f"{'CRASH' if result.crashed else 'no crash'}, {result.seconds:.0f} s",
            flush=True,
        )
        if result.crashed:
            print(result.log_tail, file=sys.stderr)
    print("\n| target | executions | crashes | time (s) | executions/s |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        row = [r.target, r.executions, int(r.crashed), f"{r.seconds:.0f}", f"{r.rate:.0f}"]
        print("| " + " | ".join(map(str, row)) + " |")
    return 1 if any(r.crashed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
