"""Gateway benchmarks: two real nodes on this machine, each figure beside a baseline run here.

    .venv/bin/python -m bench.gateway [--seconds 60] [--rate 100] [--size-mib 1024]
                                      [--only throughput|latency|big] [--concurrency 48]
                                      [--client raw|httpx] [--profile DIR] [--dir DIR]
                                      [--keep]

Nodes A and B run as separate `accord serve` processes (bench/_nodes.py) with SQLite in
WAL mode; the load generator is a third process (asyncio: by default `RawClient`, a
minimal HTTP/1.1 keep-alive client, 0.3 ms of CPU per request; `--client httpx` for httpx
AsyncClients, 2.2 to 4.7 ms). All share 2 cores.

1. Throughput, closed loop: `--concurrency` requests in flight for `--seconds`, each a
   4 KiB "notice" sent by an operator to A's local API. The figure counts the messages
   whose `delivered` event (B's signed receipt verified and stored at A) falls inside the
   window, divided by the window. Afterwards every accepted message must reach `delivered`,
   counted from A's outbox through the local API. Baseline: a bare FastAPI endpoint under
   uvicorn, over TLS, that parses the same multipart request and stores the same 4 KiB row
   in SQLite (WAL, synchronous=NORMAL, as the node), driven by the same generator.
   Target: >= 1,000 messages/s.
2. Latency, open loop: sends scheduled every 1/`--rate` s whatever the answers. Latency is
   the `delivered` event's `at` (A's clock, when it settles B's answer) minus the
   scheduled send time (same machine, same clock), read through the local API's status
   endpoint. Baseline: the bare endpoint's response time under the same schedule.
3. A `--size-mib` attachment from A's user to B's store, streamed from the client (a
   generator body, its peak RSS shown). Wall time from the first byte of the upload to the
   `delivered` event at A; the peak RSS of each node is VmHWM, reset after start-up (the
   start-up peak, dominated by the Argon2id of the TLS key, is shown apart). Baseline:
   `age -e` plus `age -d` of the same file. The attachment is then downloaded from B and
   its SHA-256 compared, so a fast wrong answer cannot win.

With `--profile DIR`, py-spy samples both nodes during the throughput window and the
large transfer, in two modes (`_nodes.Profiler`): the thread holding the GIL (where the
Python work goes) and every thread (where each kind of thread waits). Profile in a
separate run: py-spy takes CPU from the nodes too. Results are recorded in
docs/benchmarks.md ("Gateway").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from bench import _nodes

MIB = 1024 * 1024
BOUNDARY = "accord-bench-boundary-7d1f"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
THROUGHPUT_TARGET = 1000.0
RSS_TARGET_MIB = 150.0
# 4 KiB of readable text: the message body.
BODY_TEXT = ("Accord benchmark message body. " * 140)[:4096]


def meta(attachments: list[str] | None = None) -> dict[str, Any]:
    return {
        "to": "B",
        "type": "notice",
        "marking": {"level": "OFFICIAL", "caveats": []},
        "purpose": "bench",
        "body": BODY_TEXT,
        "attachments": attachments or [],
    }


def _part_head(name: str, content_type: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()


def small_request() -> bytes:
    """The multipart body of one 4 KiB message, encoded once (the generator's CPU is
    shared with the nodes)."""
    return (
        _part_head("meta", "application/json")
        + json.dumps(meta()).encode()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _client_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    return context


# --- The load generator (a child process) ----------------------------------------------


def _clients(spec: dict[str, Any], n: int) -> list[Any]:
    """`n` clients of one connection each. One shared pool of `n` connections would cost
    the generator O(n) per request (httpcore scans every connection to assign each
    request), CPU taken from the nodes on this 2-core machine. With `client: raw` (the
    default) each is a `RawClient`, which costs the generator far less per request."""
    context = _client_context(spec["ca_file"])
    if spec.get("client", "raw") == "raw":
        return [RawClient(spec["warm_url"], context, spec.get("headers")) for _ in range(n)]
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return [
        httpx.AsyncClient(verify=context, limits=limits, timeout=60.0, headers=spec.get("headers"))
        for _ in range(n)
    ]


class RawResponse:
    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code, self.content = status_code, content

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise httpx.HTTPError(f"HTTP {self.status_code}")


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on one TLS connection (asyncio streams).

    httpx spent 2.2 to 4.7 ms of CPU per request in the first runs, more than the bare
    endpoint it loaded: the generator, not the server, set the ceiling on this 2-core
    machine. This client writes a request built from fixed headers and reads the status
    line, the headers and a Content-Length (or chunked) body: about what any HTTP/1.1
    client must do, without pools, hooks or per-request objects. It checks nothing about
    the server's certificate beyond the CA file (as `_client_context`)."""

    def __init__(self, base_url: str, context: ssl.SSLContext, headers: Any = None) -> None:
        url = httpx.URL(base_url)
        self.host, self.port = url.host, url.port or 443
        self.context = context
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._cache: dict[tuple[str, str, str], bytes] = {}

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.context
        )

    def _head(self, method: str, url: str, content_type: str, length: int) -> bytes:
        key = (method, url, f"{content_type}/{length}")
        head = self._cache.get(key)
        if head is None:
            path = httpx.URL(url).raw_path.decode()
            extra = f"content-type: {content_type}\r\n" if content_type else ""
            head = (
                f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
                f"{self.headers}{extra}content-length: {length}\r\n\r\n"
            ).encode()
            self._cache[key] = head
        return head

    async def _request(self, method: str, url: str, body: bytes, content_type: str) -> RawResponse:
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(self._head(method, url, content_type, len(body)) + body)
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
            if b"content-length" in fields:
                content = await self.reader.readexactly(int(fields[b"content-length"]))
            elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                chunks = []
                while size := int((await self.reader.readuntil(b"\r\n"))[:-2], 16):
                    chunks.append(await self.reader.readexactly(size))
                    await self.reader.readexactly(2)
                await self.reader.readexactly(2)
                content = b"".join(chunks)
            else:
                content = await self.reader.read()
                fields[b"connection"] = b"close"
            if fields.get(b"connection", b"").lower() == b"close":
                await self.aclose()
            return RawResponse(status, content)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as e:
            await self.aclose()
            raise httpx.TransportError(f"{type(e).__name__}: {e}") from e

    async def get(self, url: str) -> RawResponse:
        return await self._request("GET", url, b"", "")

    async def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> RawResponse:
        return await self._request("POST", url, content, headers.get("content-type", ""))

    async def aclose(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def _warm(clients: list[Any], url: str) -> None:
    """Open every connection (and its TLS handshake) before the window starts."""
    for r in await asyncio.gather(*[c.get(url) for c in clients]):
        r.raise_for_status()


async def _closed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    body = small_request()
    headers = {"content-type": CONTENT_TYPE}
    records: list[tuple[float, float, int, str | None]] = []
    errors: Counter[str] = Counter()
    clients = _clients(spec, spec["concurrency"])
    await _warm(clients, spec["warm_url"])
    start_wall = time.time()
    deadline = time.monotonic() + spec["seconds"]

    async def worker(client: Any) -> None:
        while time.monotonic() < deadline:
            sent = time.time()
            try:
                r = await client.post(spec["url"], content=body, headers=headers)
            except httpx.HTTPError as e:
                errors[type(e).__name__] += 1
                continue
            message_id = r.json().get("message_id") if r.status_code == 201 else None
            if r.status_code != 201:
                errors[f"HTTP {r.status_code}"] += 1
            records.append((sent, time.time(), r.status_code, message_id))

    await asyncio.gather(*[worker(c) for c in clients])
    end_wall = time.time()
    for c in clients:
        await c.aclose()
    return {"start": start_wall, "end": end_wall, "records": records, "errors": dict(errors)}


async def _open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    body = small_request()
    rate, seconds = spec["rate"], spec["seconds"]
    headers = {"content-type": CONTENT_TYPE}
    records: list[tuple[float, float, int, str | None]] = []
    errors: Counter[str] = Counter()
    clients = _clients(spec, spec["concurrency"])
    await _warm(clients, spec["warm_url"])
    idle: asyncio.Queue[Any] = asyncio.Queue()
    for c in clients:
        idle.put_nowait(c)

    async def send(scheduled: float) -> None:
        # Waiting for a free connection counts: latency runs from the scheduled time.
        client = await idle.get()
        try:
            r = await client.post(spec["url"], content=body, headers=headers)
        except httpx.HTTPError as e:
            errors[type(e).__name__] += 1
            return
        finally:
            idle.put_nowait(client)
        message_id = r.json().get("message_id") if r.status_code == 201 else None
        if r.status_code != 201:
            errors[f"HTTP {r.status_code}"] += 1
        records.append((scheduled, time.time(), r.status_code, message_id))

    tasks = []
    start_mono = time.monotonic() + 0.2
    start_wall = time.time() + 0.2
    late = 0.0
    for i in range(int(rate * seconds)):
        offset = i / rate
        delay = start_mono + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        tasks.append(asyncio.create_task(send(start_wall + offset)))
    await asyncio.gather(*tasks)
    for c in clients:
        await c.aclose()
    return {
        "start": start_wall,
        "end": start_wall + seconds,
        "records": records,
        "errors": dict(errors),
        "max_schedule_lag": late,
    }


async def _upload(spec: dict[str, Any]) -> dict[str, Any]:
    """One streamed upload: the file is read in 1 MiB chunks by a generator body."""
    path = Path(spec["file"])
    size = path.stat().st_size
    head = (
        _part_head("meta", "application/json")
        + json.dumps(meta([path.name])).encode()
        + b"\r\n"
        + _part_head("attachment", "application/octet-stream", path.name)
    )
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    async def body() -> Any:
        yield head
        with path.open("rb") as f:
            while chunk := f.read(MIB):
                yield chunk
        yield tail

    headers = {
        "content-type": CONTENT_TYPE,
        "content-length": str(len(head) + size + len(tail)),
        **spec["headers"],
    }
    async with httpx.AsyncClient(
        verify=_client_context(spec["ca_file"]), timeout=httpx.Timeout(3600.0)
    ) as client:
        start = time.time()
        r = await client.post(spec["url"], content=body(), headers=headers)
        accepted = time.time()
    r.raise_for_status()
    return {"start": start, "accepted": accepted, "message_id": r.json()["message_id"]}


async def _download(spec: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    async with httpx.AsyncClient(
        verify=_client_context(spec["ca_file"]), timeout=httpx.Timeout(3600.0)
    ) as client:
        start = time.time()
        async with client.stream("GET", spec["url"], headers=spec["headers"]) as r:
            r.raise_for_status()
            async for chunk in r.aiter_bytes():
                digest.update(chunk)
                size += len(chunk)
    return {"seconds": time.time() - start, "sha256": digest.hexdigest(), "size": size}


CHILD_JOBS = {
    "closed": _closed_loop,
    "open": _open_loop,
    "upload": _upload,
    "download": _download,
}


def child(job: str, spec_file: str, out_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    cpu = time.process_time()
    result = asyncio.run(CHILD_JOBS[job](spec))
    # The generator's own CPU, its start-up (imports) left out.
    result["cpu_seconds"] = time.process_time() - cpu
    result["peak_rss_kib"] = _nodes.vm_hwm_kib()
    Path(out_file).write_text(json.dumps(result))


class Generator:
    """The load generator as its own process; `run()` waits and returns its report."""

    def __init__(self, work: Path, job: str, spec: dict[str, Any]) -> None:
        self.work, self.job = work, job
        self.spec_file = work / f"{job}-{uuid.uuid4().hex[:8]}.spec.json"
        self.out_file = self.spec_file.with_suffix(".out.json")
        self.spec_file.write_text(json.dumps(spec))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Generator:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.gateway",
                "--child",
                self.job,
                str(self.spec_file),
                str(self.out_file),
            ],
            cwd=_nodes.PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(_nodes.PROJECT_ROOT)},
        )
        return self

    def wait(self) -> dict[str, Any]:
        assert self.process is not None
        if self.process.wait() != 0:
            raise RuntimeError(f"the {self.job} generator failed")
        result: dict[str, Any] = json.loads(self.out_file.read_text())
        return result


# --- The baseline: a bare FastAPI endpoint storing the same row --------------------------


def baseline_app(database: str) -> Any:
    import sqlite3

    local = threading.local()

    def connection() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            local.conn = conn
        return conn

    with contextlib.closing(connection()) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS messages "
            "(message_id TEXT PRIMARY KEY, created TEXT NOT NULL, body TEXT NOT NULL)"
        )
    local.conn = None

    def store(message_id: str, body: str) -> None:
        conn = connection()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO messages VALUES (?, ?, ?)",
            (message_id, datetime.now(UTC).isoformat(), body),
        )
        conn.execute("COMMIT")

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/messages", status_code=201)
    async def send(request: Request) -> dict[str, str]:
        form = await request.form()
        document = json.loads(str(form["meta"]))
        message_id = str(uuid.uuid4())
        await run_in_threadpool(store, message_id, document["body"])
        return {"message_id": message_id, "status": "stored"}

    return app


def serve_baseline(port: str, database: str, cert: str, key: str) -> None:
    import uvicorn

    uvicorn.run(
        baseline_app(database),
        host=_nodes.HOST,
        port=int(port),
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-baseline")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "baseline.crt", directory / "baseline.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class Baseline:
    """The bare endpoint as its own uvicorn process."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.cert, self.key = _self_signed(work)
        self.database = work / "baseline.db"
        self.port = _nodes.free_port()
        self.url = f"https://{_nodes.HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Baseline:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.gateway",
                "--child",
                "baseline",
                str(self.port),
                str(self.database),
                str(self.cert),
                str(self.key),
            ],
            cwd=_nodes.PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(_nodes.PROJECT_ROOT)},
        )
        deadline = time.monotonic() + 20
        with httpx.Client(verify=_client_context(str(self.cert)), timeout=2) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        return self
                time.sleep(0.1)
        raise TimeoutError("the baseline server did not start")

    def rows(self) -> int:
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return _nodes.process_cpu_seconds(self.process.pid)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)


# --- Measuring ---------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    met: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {text}", flush=True)


class CpuSampler:
    """CPU seconds of named processes, and of the whole machine, over a window."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start_cpu: dict[str, float] = {}
        self.start_machine = (0, 0)
        self.start_time = 0.0
        self.used: dict[str, float] = {}

    @staticmethod
    def _machine() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    def begin(self) -> None:
        self.start_time = time.monotonic()
        self.start_cpu = {n: _nodes.process_cpu_seconds(p) for n, p in self.pids.items()}
        self.start_machine = self._machine()

    def end(self, extra: dict[str, float] | None = None, *, as_seconds: bool = False) -> str:
        elapsed = time.monotonic() - self.start_time
        used = {n: _nodes.process_cpu_seconds(p) - self.start_cpu[n] for n, p in self.pids.items()}
        used.update(extra or {})
        self.used = used
        busy, total = self._machine()
        machine = (busy - self.start_machine[0]) / max(1, total - self.start_machine[1])
        cores = os.cpu_count() or 1
        ours = sum(used.values()) / elapsed
        parts = [f"{n} {100 * s / elapsed:.0f}%" for n, s in used.items()]
        others = max(0.0, machine * cores - ours)
        if as_seconds:
            parts = [f"{n} {s:.1f} s" for n, s in used.items()]
            return (
                f"CPU time over {elapsed:.1f} s: {', '.join(parts)}; other processes on the "
                f"machine {100 * others:.0f}% of a core; machine busy {100 * machine:.0f}% of "
                f"{cores} cores"
            )
        return (
            f"CPU over {elapsed:.1f} s (100% = one core): {', '.join(parts)}; "
            f"other processes on the machine {100 * others:.0f}%; "
            f"machine busy {100 * machine:.0f}% of {cores} cores"
        )


def _delivered_times(node: _nodes.NodeInfo) -> dict[str, float]:
    """message id -> wall time of its `delivered` event, from A's database."""
    from sqlmodel import select

    from accord.storage import Database, MessageEvent

    db = Database.open(f"sqlite:///{node.database}")
    try:
        with db.session(readonly=True) as session:
            rows = session.exec(
                select(MessageEvent.message_id, MessageEvent.at).where(
                    MessageEvent.event == "delivered"
                )
            ).all()
    finally:
        db.close()
    return {m: at.timestamp() for m, at in rows}


def _outbox_statuses(node: _nodes.NodeInfo) -> Counter[str]:
    """Count A's sent messages by status, through the local API (500 per page)."""
    counts: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {node.operator_token}"}
    with httpx.Client(verify=node.ssl_context(), timeout=60, headers=headers) as client:
        offset = 0
        while True:
            page = client.get(
                f"{node.local_url}/api/v1/messages",
                params={"box": "outbox", "limit": 500, "offset": offset},
            )
            page.raise_for_status()
            rows = page.json()
            counts.update(r["status"] for r in rows)
            if len(rows) < 500:
                return counts
            offset += 500


def _pending(node: _nodes.NodeInfo) -> int:
    import sqlite3

    uri = f"file:{node.database}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def _wait_drained(node: _nodes.NodeInfo, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _pending(node) == 0:
            return time.monotonic() - start
        time.sleep(0.5)
    raise TimeoutError(f"A's outbox still holds {_pending(node)} message(s) after {timeout} s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _fresh_pair(work: Path, name: str) -> tuple[_nodes.NodeInfo, _nodes.NodeInfo]:
    return _nodes.make_pair(work / name)


def _auth(node: _nodes.NodeInfo) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.operator_token}"}


def run_throughput(args: argparse.Namespace, work: Path, report: Report) -> None:
    print(f"== throughput: closed loop, {args.concurrency} in flight, {args.seconds:.0f} s ==")
    with Baseline(work) as baseline:
        gen = Generator(
            work,
            "closed",
            {
                "url": f"{baseline.url}/messages",
                "warm_url": f"{baseline.url}/health",
                "ca_file": str(baseline.cert),
                "concurrency": args.concurrency,
                "client": args.client,
                "seconds": args.seconds,
            },
        )
        cpu = CpuSampler({"baseline": baseline.process.pid})  # type: ignore[union-attr]
        gen.start()
        cpu.begin()
        result = gen.wait()
        cpu_line = cpu.end({"generator": result["cpu_seconds"]})
        window = result["end"] - result["start"]
        stored = sum(1 for r in result["records"] if r[2] == 201)
        base_rate = stored / window
        report.note(
            f"baseline: {stored} rows stored in {window:.1f} s = {base_rate:.0f}/s "
            f"(rows in its database: {baseline.rows()}); errors {result['errors'] or 'none'}"
        )
        report.note(f"baseline {cpu_line}")
        if stored:
            per = ", ".join(
                f"{name} {1000 * seconds / stored:.2f} ms" for name, seconds in cpu.used.items()
            )
            report.note(f"baseline CPU per stored row: {per}")

    a, b = _fresh_pair(work, "throughput")
    with _nodes.running(a, b, logs=work) as (pa, pb):
        profilers = _profilers(args, [pa, pb], "throughput")
        gen = Generator(
            work,
            "closed",
            {
                "url": f"{a.local_url}/api/v1/messages",
                "warm_url": f"{a.local_url}/api/v1/whoami",
                "ca_file": str(a.ca_file),
                "headers": _auth(a),
                "concurrency": args.concurrency,
                "client": args.client,
                "seconds": args.seconds,
            },
        )
        cpu = CpuSampler({"node A": pa.pid, "node B": pb.pid})
        gen.start()
        for p in profilers:
            p.start()
        cpu.begin()
        result = gen.wait()
        cpu_line = cpu.end({"generator": result["cpu_seconds"]})
        for p in profilers:
            p.stop()
        start, end = result["start"], result["end"]
        window = end - start
        accepted = {r[3] for r in result["records"] if r[2] == 201}
        backlog = _pending(a)
        drain = _wait_drained(a, timeout=600 + 10 * args.seconds)
        delivered = _delivered_times(a)
        statuses = _outbox_statuses(a)
    _log_problems(work, report)
    in_window = sum(1 for m in accepted if m in delivered and delivered[m] <= end)
    rate = in_window / window
    missing = len(accepted - delivered.keys())
    report.note(
        f"accord: {len(accepted)} accepted by A's API in {window:.1f} s "
        f"({len(accepted) / window:.0f}/s); {in_window} delivered (receipt stored at A) "
        f"inside the window = {rate:.0f}/s; backlog at the end {backlog}, drained in "
        f"{drain:.1f} s; errors {result['errors'] or 'none'}"
    )
    report.note(
        f"accord: A's outbox by status (local API): {dict(statuses)}; accepted but never "
        f"delivered: {missing}"
    )
    report.note(f"accord {cpu_line}")
    report.note(f"accord timeline: {_timeline(accepted, delivered, start, end)}")
    if accepted:
        per = ", ".join(
            f"{name} {1000 * seconds / len(accepted):.1f} ms" for name, seconds in cpu.used.items()
        )
        report.note(f"accord CPU per accepted message: {per}")
    honest = missing == 0 and statuses.get("delivered", 0) == len(accepted)
    report.rows.append(
        Row(
            "throughput, 4 KiB, msg/s",
            f"{rate:.0f}",
            f"{base_rate:.0f}",
            f"{rate / base_rate:.2f}",
            f">= {THROUGHPUT_TARGET:.0f}",
            ("yes" if rate >= THROUGHPUT_TARGET else "NO") + ("" if honest else " (UNVERIFIED)"),
        )
    )
    for p in profilers:
        _print_profile(p, report)


def _profilers(
    args: argparse.Namespace, processes: list[_nodes.NodeProcess], phase: str
) -> list[_nodes.Profiler]:
    """With --profile, one py-spy per node and mode (both modes at once: py-spy only
    reads the processes' memory)."""
    if not args.profile:
        return []
    args.profile.mkdir(parents=True, exist_ok=True)
    return [
        _nodes.Profiler(
            p.pid, args.profile / f"{phase}-node-{p.node.party.lower()}-{mode}.txt", mode=mode
        )
        for p in processes
        for mode in _nodes.MODES
    ]


def _timeline(accepted: set[str], delivered: dict[str, float], start: float, end: float) -> str:
    """Receipts stored per second in each tenth of the window, then after it (the drain):
    shows whether delivery keeps up while the API is loaded."""
    step = (end - start) / 10
    counts = [0] * 10
    after = 0
    for m in accepted:
        at = delivered.get(m)
        if at is None:
            continue
        if at > end:
            after += 1
        else:
            counts[min(9, max(0, int((at - start) / step)))] += 1
    rates = " ".join(f"{c / step:.0f}" for c in counts)
    return f"receipts/s per tenth of the window: {rates}; after the window: {after}"


def _print_profile(profiler: _nodes.Profiler, report: Report) -> None:
    for line in profiler.summary():
        report.note(f"  {line}")


def _log_problems(work: Path, report: Report) -> None:
    """Anything the nodes logged at warning level or above (they run with --log-level
    warning), so an error under load is seen, not just counted."""
    for log in sorted(work.glob("node-*.log")):
        lines = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if line.strip() and "UserWarning" not in line and "util.warn(" not in line
        ]
        if lines:
            report.note(f"{log.name}: {len(lines)} log line(s), first: {lines[0][:300]}")
            errors = [line for line in lines if "ERROR" in line or "Error" in line]
            for line in errors[:3]:
                report.note(f"  {line[:300]}")
        log.rename(log.with_suffix(f".{time.time_ns()}.log"))


def _status_events(node: _nodes.NodeInfo, ids: list[str]) -> dict[str, float]:
    """message id -> `delivered` event time, read through the local API."""
    out: dict[str, float] = {}
    with httpx.Client(verify=node.ssl_context(), timeout=60, headers=_auth(node)) as client:
        for message_id in ids:
            r = client.get(f"{node.local_url}/api/v1/messages/{message_id}/status")
            r.raise_for_status()
            for e in r.json()["events"]:
                if e["event"] == "delivered":
                    out[message_id] = datetime.fromisoformat(e["at"]).timestamp()
    return out


def run_latency(args: argparse.Namespace, work: Path, report: Report) -> None:
    print(f"== latency: open loop, {args.rate:.0f} msg/s offered, {args.seconds:.0f} s ==")
    spec = {"rate": args.rate, "seconds": args.seconds, "concurrency": 64, "client": args.client}
    with Baseline(work) as baseline:
        result = (
            Generator(
                work,
                "open",
                {
                    **spec,
                    "url": f"{baseline.url}/messages",
                    "warm_url": f"{baseline.url}/health",
                    "ca_file": str(baseline.cert),
                },
            )
            .start()
            .wait()
        )
    base = [r[1] - r[0] for r in result["records"] if r[2] == 201]
    report.note(
        f"baseline: {len(base)} stored; response time p50 {1000 * _percentile(base, 0.5):.1f} ms, "
        f"p99 {1000 * _percentile(base, 0.99):.1f} ms; errors {result['errors'] or 'none'}"
    )

    a, b = _fresh_pair(work, "latency")
    with _nodes.running(a, b, logs=work) as (pa, pb):
        cpu = CpuSampler({"node A": pa.pid, "node B": pb.pid})
        gen = Generator(
            work,
            "open",
            {
                **spec,
                "url": f"{a.local_url}/api/v1/messages",
                "warm_url": f"{a.local_url}/api/v1/whoami",
                "ca_file": str(a.ca_file),
                "headers": _auth(a),
            },
        ).start()
        cpu.begin()
        result = gen.wait()
        cpu_line = cpu.end({"generator": result["cpu_seconds"]})
        accepted = [r for r in result["records"] if r[2] == 201]
        _wait_drained(a, timeout=600 + 10 * args.seconds)
        delivered = _status_events(a, [r[3] for r in accepted])
    _log_problems(work, report)
    latencies = [delivered[r[3]] - r[0] for r in accepted if r[3] in delivered]
    responses = [r[1] - r[0] for r in accepted]
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    report.note(
        f"accord: {len(accepted)} accepted, {len(latencies)} delivered; send->receipt "
        f"p50 {1000 * p50:.1f} ms, p99 {1000 * p99:.1f} ms, max "
        f"{1000 * max(latencies):.1f} ms; API response p50 "
        f"{1000 * _percentile(responses, 0.5):.1f} ms, p99 "
        f"{1000 * _percentile(responses, 0.99):.1f} ms; schedule lag max "
        f"{1000 * result['max_schedule_lag']:.1f} ms; errors {result['errors'] or 'none'}"
    )
    report.note(f"accord {cpu_line}")
    ok = len(latencies) == len(accepted) == int(args.rate * args.seconds)
    suffix = "" if ok else " (INCOMPLETE)"
    bp50, bp99 = _percentile(base, 0.5), _percentile(base, 0.99)
    report.rows.append(
        Row(
            f"latency p50 @ {args.rate:.0f}/s, ms",
            f"{1000 * p50:.1f}",
            f"{1000 * bp50:.1f}",
            f"{p50 / bp50:.1f}x",
            "report",
            "-" + suffix,
        )
    )
    report.rows.append(
        Row(
            f"latency p99 @ {args.rate:.0f}/s, ms",
            f"{1000 * p99:.1f}",
            f"{1000 * bp99:.1f}",
            f"{p99 / bp99:.1f}x",
            "report",
            "-" + suffix,
        )
    )


def _make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MIB):
            chunk = os.urandom(MIB)
            digest.update(chunk)
            f.write(chunk)
        rest = os.urandom(size % MIB)
        digest.update(rest)
        f.write(rest)
    return digest.hexdigest()


class RssSampler:
    """The highest VmRSS of some processes, sampled every 50 ms (a cross-check of VmHWM)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak[name] = max(self.peak[name], int(line.split()[1]))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: "5" into clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_big(args: argparse.Namespace, work: Path, report: Report) -> None:
    size = args.size_mib * MIB
    print(f"== {args.size_mib} MiB attachment, A's user to B's store ==")
    age = shutil.which("age")
    if age is None:
        sys.exit("the age tool is not installed (apt install age); it is the baseline")
    data = work / "big"
    data.mkdir()
    source = data / "attachment.bin"
    print(f"  writing {args.size_mib} MiB of random data ...", flush=True)
    expected = _make_file(source, size)

    # The baseline: age encrypting, then decrypting, the same file.
    from accord.crypto import _age
    from accord.crypto._primitives import x25519_generate, x25519_public

    private = x25519_generate()
    key_file = data / "age.key"
    key_file.write_text(_age.encode_identity(private) + "\n")
    recipient = _age.encode_recipient(x25519_public(private))
    os.sync()
    t = time.perf_counter()
    subprocess.run([age, "-e", "-r", recipient, "-o", str(data / "a.age"), str(source)], check=True)
    encrypt = time.perf_counter() - t
    os.sync()
    t = time.perf_counter()
    subprocess.run(
        [age, "-d", "-i", str(key_file), "-o", str(data / "a.out"), str(data / "a.age")],
        check=True,
    )
    decrypt = time.perf_counter() - t
    age_ok = _sha256(data / "a.out") == expected
    for name in ("a.age", "a.out"):
        (data / name).unlink()
    age_seconds = encrypt + decrypt
    report.note(
        f"age: encrypt {encrypt:.2f} s + decrypt {decrypt:.2f} s = {age_seconds:.2f} s "
        f"(output verified: {age_ok})"
    )

    a, b = _fresh_pair(work, "big")
    with _nodes.running(a, b, logs=work) as (pa, pb):
        startup = {p.node.party: p.peak_rss_kib() for p in (pa, pb)}
        reset = all(_reset_peak_rss(p.pid) for p in (pa, pb))
        cpu = CpuSampler({"node A": pa.pid, "node B": pb.pid})
        os.sync()
        profilers = _profilers(args, [pa, pb], "big")
        with RssSampler({"A": pa.pid, "B": pb.pid}) as sampled:
            for p in profilers:
                p.start()
            cpu.begin()
            upload = (
                Generator(
                    work,
                    "upload",
                    {
                        "url": f"{a.local_url}/api/v1/messages",
                        "file": str(source),
                        "ca_file": str(a.ca_file),
                        "headers": _auth(a),
                    },
                )
                .start()
                .wait()
            )
            message_id = upload["message_id"]
            delivered_at = _poll_delivered(a, message_id, timeout=3600)
            cpu_line = cpu.end({"uploader": upload["cpu_seconds"]}, as_seconds=True)
            for p in profilers:
                p.stop()
        peak = {p.node.party: p.peak_rss_kib() for p in (pa, pb)}
        wall = delivered_at - upload["start"]
        report.note(
            f"accord: upload + seal at A {upload['accepted'] - upload['start']:.2f} s, "
            f"then delivery to B {delivered_at - upload['accepted']:.2f} s: "
            f"{wall:.2f} s in all ({size / MIB / wall:.0f} MiB/s)"
        )
        report.note(f"accord {cpu_line}")
        report.note(
            f"peak RSS (VmHWM{' reset after start-up' if reset else ', NOT reset'}): "
            f"A {peak['A'] / 1024:.1f} MiB, B {peak['B'] / 1024:.1f} MiB; sampled VmRSS max "
            f"A {sampled.peak['A'] / 1024:.1f}, B {sampled.peak['B'] / 1024:.1f} MiB; "
            f"start-up VmHWM A {startup['A'] / 1024:.1f}, B {startup['B'] / 1024:.1f} MiB; "
            f"uploading client {upload['peak_rss_kib'] / 1024:.1f} MiB"
        )
        # Verification: B's operator downloads the attachment (B decrypts it) and the
        # bytes must hash to the original.
        _reset_peak_rss(pb.pid)
        incoming = _inbox_id(b, message_id)
        download = (
            Generator(
                work,
                "download",
                {
                    "url": f"{b.local_url}/api/v1/messages/{incoming}/attachments/0",
                    "ca_file": str(b.ca_file),
                    "headers": _auth(b),
                },
            )
            .start()
            .wait()
        )
        download_peak = pb.peak_rss_kib()
    _log_problems(work, report)
    for p in profilers:
        _print_profile(p, report)
    verified = download["sha256"] == expected and download["size"] == size
    report.note(
        f"verification: B's operator downloaded it in {download['seconds']:.2f} s, "
        f"SHA-256 {'matches' if verified else 'DIFFERS'}; B's VmHWM during the download "
        f"{download_peak / 1024:.1f} MiB"
    )
    report.rows.append(
        Row(
            f"{args.size_mib} MiB attachment A->B, s",
            f"{wall:.1f}",
            f"{age_seconds:.1f}",
            f"{age_seconds / wall:.2f}",
            "report (age/ours)",
            "-" if verified else "NO (content differs)",
        )
    )
    for party in ("A", "B"):
        mib = peak[party] / 1024
        report.rows.append(
            Row(
                f"peak RSS node {party} during transfer, MiB",
                f"{mib:.0f}",
                "-",
                "-",
                f"< {RSS_TARGET_MIB:.0f}",
                "yes" if mib < RSS_TARGET_MIB else "NO",
            )
        )
    for party in ("A", "B"):
        mib = startup[party] / 1024
        report.rows.append(
            Row(
                f"peak RSS node {party} at start-up, MiB",
                f"{mib:.0f}",
                "-",
                "-",
                f"< {RSS_TARGET_MIB:.0f}",
                "yes" if mib < RSS_TARGET_MIB else "NO",
            )
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _poll_delivered(node: _nodes.NodeInfo, message_id: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    url = f"{node.local_url}/api/v1/messages/{message_id}/status"
    with httpx.Client(verify=node.ssl_context(), timeout=60, headers=_auth(node)) as client:
        while time.monotonic() < deadline:
            status = client.get(url).json()
            if status["status"] == "failed":
                raise RuntimeError(f"delivery failed: {status['events']}")
            for e in status["events"]:
                if e["event"] == "delivered":
                    return datetime.fromisoformat(e["at"]).timestamp()
            time.sleep(0.2)
    raise TimeoutError(f"{message_id} not delivered within {timeout} s")


def _inbox_id(node: _nodes.NodeInfo, message_id: str) -> str:
    with httpx.Client(verify=node.ssl_context(), timeout=60, headers=_auth(node)) as client:
        rows = client.get(f"{node.local_url}/api/v1/messages", params={"box": "inbox"}).json()
    for r in rows:
        if r["message_id"] == message_id:
            return str(r["message_id"])
    raise RuntimeError(f"B's inbox does not list {message_id}")


# --- Main --------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    return (
        f"{os.cpu_count()} CPUs ({model}){mem}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {socket.gethostname()}"
    )


def code_state() -> str:
    """The commit measured, and a digest of uncommitted changes to the packages, so a
    figure can be tied to the code that produced it (the tree changes between runs)."""
    root = _nodes.PROJECT_ROOT
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "crypto", "storage", "gateway", "policy"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
    except OSError:
        return "code: not a git checkout"
    paths = sorted(line[3:] for line in changed if line.strip())
    digest = hashlib.sha256()
    for path in paths:
        with contextlib.suppress(OSError):
            for file in (
                sorted((root / path).rglob("*.py")) if (root / path).is_dir() else [root / path]
            ):
                digest.update(file.read_bytes())
    dirty = f" + {len(paths)} uncommitted path(s) (digest {digest.hexdigest()[:12]})"
    return f"code: {head}{dirty if paths else ' (clean)'}"


def print_table(report: Report) -> None:
    headers = ("figure", "value", "baseline", "ratio", "target", "met?")
    rows = [headers] + [
        (r.figure, r.value, r.baseline, r.ratio, r.target, r.met) for r in report.rows
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    print()
    for i, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=100.0, help="latency: offered msg/s")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--only", choices=("throughput", "latency", "big"))
    parser.add_argument("--concurrency", type=int, default=48, help="throughput: in flight")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator's HTTP client: raw (minimal HTTP/1.1, default) or httpx",
    )
    parser.add_argument("--profile", type=Path, help="py-spy the nodes; raw stacks into DIR")
    parser.add_argument("--dir", type=Path, help="where the nodes and files go")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' homes and logs")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child[0] == "baseline":
            serve_baseline(*args.child[1:])
        else:
            child(*args.child)
        return 0

    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}")
    print(code_state())
    print(f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.gateway', *sys.argv[1:]])}")
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="accord-bench-", dir=args.dir))
    try:
        if args.only in (None, "throughput"):
            run_throughput(args, work, report)
        if args.only in (None, "latency"):
            run_latency(args, work, report)
        if args.only in (None, "big"):
            run_big(args, work, report)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(report)
    if args.profile:
        print("profiled run: py-spy took CPU from the nodes, so these figures are lower bounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
