"""Two real Accord nodes on loopback, each in its own `accord serve` process, for benchmarks.

`make_pair(root)` creates Party A and Party B in `root/a` and `root/b` with the admin
functions behind `accord init`, `accord user add` and `accord peer add`: an operator on
each node (users first, since descriptors carry signatory keys), then the descriptors
exchanged both ways. `NodeProcess` runs one node as `accord serve`, waits for its local
API, and reads the process's CPU time and peak RSS from /proc. `Profiler` attaches py-spy
to a running process and sums its samples per function.

The nodes use the production code paths unchanged: SQLite in WAL mode in each home, the
local API over HTTPS, the peer API over mutual TLS. Only the Argon2id cost of the key
files is lowered (it is paid once, at start-up, and is not what is measured).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = b"bench node passphrase"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class NodeInfo:
    """What a client needs to use one node's local API."""

    party: str
    home: Path
    local_url: str
    ca_file: Path
    operator_token: str

    @property
    def database(self) -> Path:
        return self.home / "accord.db"

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        # The node's certificate names its listen addresses; the pin is the CA file.
        context.check_hostname = False
        return context


def _init(root: Path, party: str, now: datetime) -> Any:
    from accord import crypto
    from accord.gateway.admin import home as _admin

    listen, local = free_port(), free_port()
    return _admin.init_node(
        root,
        party=party,
        name=f"Bench node {party}",
        listen=f"{HOST}:{listen}",
        local=f"{HOST}:{local}",
        passphrase=PASSPHRASE,
        now=now,
        kdf_cost=crypto.KdfCost(2, 8 * 1024 * 1024),
    )


def make_pair(root: Path, **delivery: object) -> tuple[NodeInfo, NodeInfo]:
    """Create nodes A and B under `root`, peered both ways, each with an operator.

    `delivery` overrides settings of the delivery worker (`batch_size`, `poll_interval`)."""
    from accord.gateway.admin import home as _admin
    from accord.gateway.node.config import Home

    now = datetime.now(UTC)
    results = {p: _init(root / p.lower(), p, now) for p in ("A", "B")}
    tokens = {
        p: _admin.add_user(Home(r.home), "bench", role="operator", now=now).token
        for p, r in results.items()
    }
    descriptors = {
        p: _admin.export_descriptor(Home(r.home), PASSPHRASE, now) for p, r in results.items()
    }
    _admin.add_peer(Home(results["A"].home), descriptors["B"], fingerprint=None, now=now)
    _admin.add_peer(Home(results["B"].home), descriptors["A"], fingerprint=None, now=now)
    if delivery:
        for r in results.values():
            home = Home(r.home)
            config = home.load_config()
            home.save_config(config.with_changes(delivery=_replace(config.delivery, **delivery)))
    a, b = (NodeInfo(p, r.home, r.node_url, r.ca_file, tokens[p]) for p, r in results.items())
    return a, b


def _replace(obj: object, **changes: object) -> object:
    from dataclasses import replace

    return replace(obj, **changes)  # type: ignore[type-var]


class NodeProcess:
    """One `accord serve` process; a context manager that always stops it."""

    def __init__(self, node: NodeInfo, log_file: Path) -> None:
        self.node = node
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> NodeProcess:
        env = {
            **os.environ,
            "ACCORD_PASSPHRASE": PASSPHRASE.decode(),
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "accord"),
                    "serve",
                    "--home",
                    str(self.node.home),
                    "--log-level",
                    "warning",
                ],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=self.node.ssl_context(), timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"node {self.node.party} exited at start-up; see {self.log_file}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.node.local_url}/api/v1/health").status_code == 200:
                        return self
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"node {self.node.party} did not start within {timeout} s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def peak_rss_kib(self) -> int:
        return vm_hwm_kib(self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def vm_hwm_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def process_cpu_seconds(pid: int | str = "self") -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@contextlib.contextmanager
def running(*nodes: NodeInfo, logs: Path) -> Iterator[list[NodeProcess]]:
    processes = [NodeProcess(n, logs / f"node-{n.party.lower()}.log") for n in nodes]
    try:
        for p in processes:
            p.start()
        yield processes
    finally:
        for p in processes:
            p.stop()


# py-spy counts a thread as active when it is runnable, which on a busy 2-core machine
# includes threads waiting for a core. Two modes are used instead: "gil" keeps only the
# thread holding the GIL (the Python work; C code that releases the GIL, such as SQLite
# steps, fsync and libsodium, is not seen), "idle" keeps every thread, to see where each
# kind of thread spends its wall time, waiting included.
MODES = {"gil": ["--gil"], "idle": ["--idle"]}

# Leaf frames grouped by what they are, first match wins (a substring of "func (path)").
CATEGORIES = (
    ("SQLite (C: statement steps, commits)", ("do_execute (", "do_commit (", "do_rollback (")),
    ("SQLAlchemy / SQLModel (Python)", ("sqlalchemy/", "sqlmodel/")),
    ("fsync, file create/rename", ("_fsync_dir", "BlobWriter.commit", "_mkstemp", "fdopen")),
    ("crypto: libsodium, cryptography", ("nacl/", "cryptography/", "crypto/_primitives")),
    ("crypto/ (Python)", ("crypto/",)),
    ("TLS (ssl module)", ("ssl.py", "sslproto.py")),
    (
        "HTTP stack: uvicorn, h11, starlette, fastapi, httpx",
        (
            "uvicorn/",
            "h11/",
            "starlette/",
            "fastapi/",
            "httpx/",
            "httpcore/",
            "python_multipart/",
        ),
    ),
    ("pydantic", ("pydantic",)),
    ("JSON, canonical JSON", ("json/", "rfc8785/", "canonical")),
    ("threads: start, locks, conditions", ("threading.py", "queue.py", "concurrent/")),
    ("asyncio event loop", ("asyncio/", "selectors.py", "anyio/")),
    ("gateway/ (Python)", ("gateway/",)),
    ("storage/ (Python)", ("storage/",)),
)

# Where a thread is, read from its whole stack (idle mode), first match wins. A thread
# blocked inside a C call (a lock, SimpleQueue.get) shows as its last Python frame, hence
# "in: ..." for everything not matched here.
WAITS = (
    ("blocked starting a thread (Thread.start waits for it to run)", "Thread.start ("),
    # A leaf in Database.session is its RLock: writers of one process queue there.
    ("waiting for the process's SQLite writer lock", "Database.session (storage/_database.py)$"),
    ("waiting for a pooled DB connection (QueuePool checkout)", "QueuePool._do_get"),
    ("waiting for the SQLite write lock (BEGIN IMMEDIATE)", "_sqlite_on_begin"),
    ("waiting for its group commit (GroupCommit.run)", "GroupCommit.run"),
    ("fsync / blob commit", "BlobWriter.commit"),
    ("SQL statements and commits", "DefaultDialect.do_"),
    ("idle: event loop waiting in epoll", "EpollSelector.select"),
    ("idle: pool thread waiting for work", "WorkerThread.run (anyio"),
    ("idle: pool thread waiting for work", "_worker (concurrent"),
    ("waiting on a threading.Condition", "Condition.wait ("),
)


def _thread_kind(name: str) -> str:
    if name == "MainThread":
        return "event loop (MainThread)"
    if name.startswith("AnyIO worker"):
        return "anyio threads (sync endpoints, dependencies)"
    if name.startswith("asyncio_"):
        return "asyncio.to_thread threads"
    if name.startswith("Thread-"):
        return "threading.Thread per send"
    return name


class Profiler:
    """py-spy sampling one process, all threads, into collapsed stacks (`raw` format).

    Started with `start()`, stopped with `stop()`; `summary()` then turns the samples into
    report lines. py-spy itself costs CPU on this 2-core machine, so profiled runs are
    separate from measured ones.
    """

    def __init__(self, pid: int, out: Path, rate: int = 97, mode: str = "gil") -> None:
        self.pid, self.out, self.rate, self.mode = pid, out, rate, mode
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        local = Path(sys.executable).parent / "py-spy"
        return str(local) if local.exists() else shutil.which("py-spy")

    def start(self) -> None:
        exe = self.available()
        if exe is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.process = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--nonblocking",
                "--threads",
                "--output",
                str(self.out),
                *MODES[self.mode],
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stacks(self) -> list[tuple[str, list[str], int]]:
        """(thread kind, frames root first, samples) for each distinct stack."""
        result: list[tuple[str, list[str], int]] = []
        if not self.out.exists():
            return result
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            kind = "?"
            if frames and frames[0].startswith("thread ("):
                kind = _thread_kind(frames[0].split(": ", 1)[-1])
                frames = frames[1:]
            frames = [_short(f) for f in frames if not f.startswith("process ")]
            if frames:
                result.append((kind, frames, int(count)))
        return result

    def summary(self, n: int = 15) -> list[str]:
        stacks = self.stacks()
        samples = sum(c for _, _, c in stacks)
        if not samples:
            return [f"{self.out.name}: no samples"]
        return (self._gil if self.mode == "gil" else self._idle)(stacks, samples, n)

    def _gil(self, stacks: list[tuple[str, list[str], int]], samples: int, n: int) -> list[str]:
        seconds = samples / self.rate
        # Wall time with the GIL held: on a busy machine it includes time the holder
        # waited for a core, so the shares matter more than the total.
        lines = [
            f"{self.out.name}: {samples} samples with the GIL held ({seconds:.1f} s of wall "
            f"time); shares of them:"
        ]

        def share(count: int) -> str:
            return f"{100 * count / samples:5.1f}%"

        categories: Counter[str] = Counter()
        own: Counter[str] = Counter()
        total: Counter[str] = Counter()
        for _, frames, count in stacks:
            leaf = frames[-1]
            categories[
                next((c for c, keys in CATEGORIES if any(k in leaf for k in keys)), "other")
            ] += count
            own[leaf] += count
            for name in set(frames):
                total[name] += count
        lines.append("by kind of code (leaf frame):")
        lines += [f"  {share(c)}  {name}" for name, c in categories.most_common()]
        lines.append("top functions by own samples (self, total):")
        lines += [f"  {share(c)} {share(total[name])}  {name}" for name, c in own.most_common(n)]
        ours = [
            (name, c)
            for name, c in total.most_common()
            if any(p in name for p in ("gateway/", "crypto/", "storage/", "policy/"))
            and not name.startswith(("main (", "serve ("))
        ][:n]
        lines.append("project functions by inclusive samples:")
        lines += [f"  {share(c)}  {name}" for name, c in ours]
        return lines

    def _idle(self, stacks: list[tuple[str, list[str], int]], samples: int, n: int) -> list[str]:
        lines = [f"{self.out.name}: {samples} thread samples, idle included"]
        per_kind: dict[str, Counter[str]] = {}
        for kind, frames, count in stacks:
            joined = ";".join(frames)
            what = next(
                (
                    label
                    for label, key in WAITS
                    if (joined.endswith(key[:-1]) if key.endswith("$") else key in joined)
                ),
                None,
            )
            if what is None:
                what = f"in: {frames[-1]}"
            per_kind.setdefault(kind, Counter())[what] += count
        for kind, counter in sorted(per_kind.items(), key=lambda kv: -sum(kv[1].values())):
            kind_total = sum(counter.values())
            lines.append(f"{kind}: {kind_total} samples")
            for what, c in counter.most_common(6):
                lines.append(f"  {100 * c / kind_total:5.1f}%  {what}")
        return lines


def _short(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (pkg/file.py)`: one entry per function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"
