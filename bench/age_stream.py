"""Streaming age encryption: `crypto._age` against the reference `age` tool, file to file.

    .venv/bin/python -m bench.age_stream [--size-mib 1024] [--rounds 3] [--dir DIR]

Creates a random file, then in each round runs, one after the other, `age -e -r`,
our encryption (header + payload), `age -d -i` and our decryption, each in its own
process writing a fresh output file after a `sync`. The best round of each operation is
reported.
Every decrypted output is checked against the input's SHA-256, and age must open our
file too, so a fast wrong answer cannot win.

Our times are measured inside the process, from opening the files to closing them; the
interpreter start-up is left out (a gateway is a long-running process) but shown in the
"process" column. age's times are its whole process. Peak RSS is VmHWM: ours as reported
by the process itself, age's sampled from /proc while it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
BASELINE = {
    "age -e -r": "age -e -r",
    "ours encrypt": "age -e -r",
    "age -d -i": "age -d -i",
    "ours decrypt": "age -d -i",
}


@dataclass
class Run:
    seconds: float  # the operation itself
    process_seconds: float  # the whole process, start-up included
    peak_rss_kib: int


def _vm_hwm_kib(pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _run_sampled(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """Run a process; return it, its wall time and its peak RSS sampled from /proc."""
    peak = 0
    start = time.perf_counter()
    process = subprocess.Popen(
        argv,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )

    def sample() -> None:
        nonlocal peak
        while process.poll() is None:
            value = _vm_hwm_kib(process.pid)
            if value:
                peak = max(peak, value)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    elapsed = time.perf_counter() - start
    sampler.join()
    result = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {stderr.strip()}")
    return result, elapsed, peak


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(4 * MIB))
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(buffer[:n])
    return digest.hexdigest()


def _make_input(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
        f.write(os.urandom(size % MIB))


def _age_run(argv: list[str]) -> Run:
    _, elapsed, peak = _run_sampled(argv)
    return Run(elapsed, elapsed, peak)


def _ours_run(operation: str, src: Path, dst: Path, key: str) -> Run:
    argv = [sys.executable, "-m", "bench.age_stream", "--child", operation, str(src), str(dst), key]
    result, elapsed, sampled = _run_sampled(argv)
    report = json.loads(result.stdout)
    return Run(report["seconds"], elapsed, report["peak_rss_kib"] or sampled)


def child(operation: str, src: str, dst: str, key: str) -> None:
    """One timed operation in a fresh process; prints its time and peak RSS as JSON."""
    from accord.crypto import _age

    start = time.perf_counter()
    with open(src, "rb") as source, open(dst, "wb") as sink:
        if operation == "encrypt":
            _age.encrypt_file(source, sink, [_age.decode_recipient(key)])
        else:
            _age.decrypt_file(source, sink, _age.decode_identity(key))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_kib": _vm_hwm_kib()}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return

    age = shutil.which("age")
    if age is None:
        sys.exit("the age tool is not installed (apt install age); it is the baseline")
    from accord.crypto import _age
    from accord.crypto._primitives import x25519_generate, x25519_public

    size = args.size_mib * MIB
    private = x25519_generate()
    identity = _age.encode_identity(private)
    recipient = _age.encode_recipient(x25519_public(private))

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="age-bench-") as folder:
        base = Path(folder)
        plain = base / "plain"
        key_file = base / "key.txt"
        key_file.write_text(identity + "\n")
        key_file.chmod(0o600)
        print(f"writing {args.size_mib} MiB of random data to {plain} ...", flush=True)
        _make_input(plain, size)
        expected = _sha256_file(plain)

        operations = {
            "age -e -r": lambda: _age_run(
                [age, "-e", "-r", recipient, "-o", str(base / "a.age"), str(plain)]
            ),
            "ours encrypt": lambda: _ours_run("encrypt", plain, base / "o.age", recipient),
            "age -d -i": lambda: _age_run(
                [age, "-d", "-i", str(key_file), "-o", str(base / "a.out"), str(base / "a.age")]
            ),
            "ours decrypt": lambda: _ours_run("decrypt", base / "o.age", base / "o.out", identity),
        }
        outputs = {
            "age -e -r": "a.age",
            "ours encrypt": "o.age",
            "age -d -i": "a.out",
            "ours decrypt": "o.out",
        }
        best: dict[str, Run] = {}
        for round_number in range(1, args.rounds + 1):
            for name, operation in operations.items():
                (base / outputs[name]).unlink(missing_ok=True)
                # Flush earlier outputs first, so no run pays for another's writeback.
                os.sync()
                run = operation()
                if name not in best or run.seconds < best[name].seconds:
                    best[name] = run
                print(f"round {round_number}: {name:13} {run.seconds:6.3f} s", flush=True)
            # Outputs must be right, or the times mean nothing.
            for name in ("age -d -i", "ours decrypt"):
                if _sha256_file(base / outputs[name]) != expected:
                    sys.exit(f"{name} produced a different plaintext")
        subprocess.run(
            [age, "-d", "-i", str(key_file), "-o", str(base / "x.out"), str(base / "o.age")],
            check=True,
        )
        if _sha256_file(base / "x.out") != expected:
            sys.exit("age did not decrypt our file to the input")

    megabytes = size / 1e6
    print()
    print(f"{args.size_mib} MiB, file to file, best of {args.rounds} rounds, {os.cpu_count()} CPUs")
    print(f"{'operation':14} {'MB/s':>7} {'vs age':>7} {'peak RSS MiB':>13} {'process MB/s':>13}")
    for name, run in best.items():
        baseline = best[BASELINE[name]]
        print(
            f"{name:14} {megabytes / run.seconds:7.0f} {baseline.seconds / run.seconds:7.2f}"
            f" {run.peak_rss_kib / 1024:13.1f} {megabytes / run.process_seconds:13.0f}"
        )
    print("outputs verified: SHA-256 of every decryption equals the input; age opens our file")


if __name__ == "__main__":
    main()
