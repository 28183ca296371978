"""Audit log benchmarks, each figure beside a baseline measured in the same run.

    python -m bench.audit [--leaves 1000000] [--rounds 5] [--seconds 2]

1. Appends (storage, SQLite), one transaction each and 500 per transaction, on an empty
   log and on the large one, against a bare INSERT of the same row into a table of the
   same shape, in the same kind of transaction. The two alternate in short rounds and
   each figure is the median of its rounds (the machine is shared).
2. Proofs at --leaves leaves: inclusion and consistency proofs from the stored subtree
   hashes (plan, read, assemble, verify), against bare primary-key reads of as many rows
   with sqlite3 plus as many SHA-256 calls; and the in-memory ways (a `MerkleTree`, and
   a one-shot proof from the list of leaf hashes, which hashes the whole tree).
3. Whole-log verification at --leaves leaves (`audit_verify`, target < 10 s), against
   bare SHA-256 of the same leaves in memory, and a bare SELECT of them with sqlite3
   plus that SHA-256.
4. The node under load (--node-seconds, 0 to skip): two real `accord serve` processes,
   a closed loop of --concurrency clients sending 4 KiB notices to A; every message is
   one leaf in A's log when sent, one in B's when received and one more in A's when its
   receipt is stored, each in the transaction of that change, while both nodes sign
   checkpoints and cosign each other's. Reported: messages accepted/s and leaves
   appended/s on each node, read from their databases, and what `accord audit verify`
   finds afterwards. Baseline: `gateway._audit.record` of a typical event in its own
   transaction against a bare `append_leaf` of the same bytes.

The large log is built in bulk (the rows `append_leaf` would write, computed here), and
`audit_verify` must find it consistent before anything is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from accord.crypto.merkle import (
    MerkleTree,
    consistency_plan,
    inclusion_plan,
    inclusion_proof,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)
from accord.storage import (
    AuditReport,
    Database,
    append_leaf,
    audit_verify,
    tree_head,
    tree_nodes,
    tree_root,
)
from accord.storage._audit import NODE_STRIDE

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
sha256 = hashlib.sha256


def event(i: int) -> bytes:
    record = {"event": "send", "message_id": f"m-{i:08d}", "peer": "МВД-РБ", "marking": "ДСП"}
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def rate(fn: Callable[[], None], seconds: float) -> float:
    for _ in range(5):
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def alternate(
    base: Callable[[], None], ours: Callable[[], None], rounds: int, seconds: float
) -> tuple[float, float]:
    b, o = [], []
    for _ in range(rounds):
        b.append(rate(base, seconds / rounds))
        o.append(rate(ours, seconds / rounds))
    return statistics.median(b), statistics.median(o)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- The databases ---------------------------------------------------------------------


def fresh(path: Path) -> Database:
    db = Database.open(f"sqlite:///{path}")
    db.migrate()
    with db.engine.begin() as connection:
        # The baseline table: the same columns as audit_leaves, nothing else.
        connection.execute(
            text(
                'CREATE TABLE bare_leaves ("index" INTEGER PRIMARY KEY, leaf BLOB NOT NULL,'
                " leaf_hash BLOB NOT NULL, appended_at DATETIME NOT NULL)"
            )
        )
    return db


def bulk_log(db: Database, path: Path, n: int) -> list[bytes]:
    """Write the rows of n appends at once (leaves, stored subtrees, state) with sqlite3."""
    leaves = [event(i) for i in range(n)]
    hashes = [sha256(b"\x00" + leaf).digest() for leaf in leaves]
    levels = [hashes]
    while len(levels[-1]) > 1:
        pairs = iter(levels[-1])
        levels.append(
            [sha256(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
        )
    frontier = [levels[node.level][node.index] for node in root_nodes(n)]
    # How storage's UTCDateTime writes a time on SQLite: naive UTC, with microseconds.
    appended_at = NOW.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    db.close()
    raw = sqlite3.connect(path)
    with raw:
        raw.executemany(
            "INSERT INTO audit_leaves VALUES (?, ?, ?, ?)",
            ((i, leaves[i], hashes[i], appended_at) for i in range(n)),
        )
        for level in range(0, len(levels), NODE_STRIDE):
            raw.executemany(
                "INSERT INTO audit_nodes VALUES (?, ?, ?)",
                ((level, i, h) for i, h in enumerate(levels[level])),
            )
        raw.execute("UPDATE audit_state SET size = ?, frontier = ?", (n, b"".join(frontier)))
    raw.close()
    return leaves


# --- 1. Appends ------------------------------------------------------------------------


def appends(
    db: Database, rounds: int, seconds: float, label: str
) -> list[tuple[str, float, float]]:
    counter = iter(range(10**12))

    def ours_one() -> None:
        with db.session() as session:
            append_leaf(session, event(next(counter)), NOW)

    def base_one() -> None:
        i = next(counter)
        leaf = event(i)
        with db.session() as session:
            session.connection().execute(
                text("INSERT INTO bare_leaves VALUES (:i, :leaf, :h, :at)"),
                {"i": i, "leaf": leaf, "h": sha256(b"\x00" + leaf).digest(), "at": NOW},
            )

    def ours_batch() -> None:
        with db.session() as session:
            for _ in range(500):
                append_leaf(session, event(next(counter)), NOW)

    def base_batch() -> None:
        with db.session() as session:
            connection = session.connection()
            for _ in range(500):
                i = next(counter)
                leaf = event(i)
                connection.execute(
                    text("INSERT INTO bare_leaves VALUES (:i, :leaf, :h, :at)"),
                    {"i": i, "leaf": leaf, "h": sha256(b"\x00" + leaf).digest(), "at": NOW},
                )

    b1, o1 = alternate(base_one, ours_one, rounds, seconds)
    b2, o2 = alternate(base_batch, ours_batch, rounds, seconds)
    return [
        (f"append, 1 per transaction ({label})", o1, b1),
        (f"append, 500 per transaction ({label})", o2 * 500, b2 * 500),
    ]


# --- 2. Proofs -------------------------------------------------------------------------


def storage_proofs(db: Database, path: Path, leaves: list[bytes], samples: int) -> list[str]:
    n = len(leaves)
    rng = random.Random(7)
    indexes = [rng.randrange(n) for _ in range(samples)]
    olds = [rng.randrange(1, n) for _ in range(samples)]
    ours_inc, ours_con, base_inc, rows_read = [], [], [], []
    raw = sqlite3.connect(path)
    with db.session(readonly=True) as session:
        head = tree_head(session)
        for index in indexes:
            start = time.perf_counter()
            plan = inclusion_plan(index, n)
            proof = plan.assemble(tree_nodes(session, [(x.level, x.index) for x in plan.nodes]))
            leaf_hash = sha256(b"\x00" + leaves[index]).digest()
            verify_inclusion(leaf_hash, index, n, proof, head.root)
            ours_inc.append(time.perf_counter() - start)
            # Baseline: the same rows read by primary key, the same number of SHA-256.
            reads = [
                (x.level - x.level % NODE_STRIDE, (x.index << (x.level % NODE_STRIDE)) + k)
                for x in plan.nodes
                for k in range(1 << (x.level % NODE_STRIDE))
            ]
            rows_read.append(len(reads))
            start = time.perf_counter()
            got = [
                raw.execute(
                    'SELECT hash FROM audit_nodes WHERE level = ? AND "index" = ?', r
                ).fetchone()[0]
                for r in reads
            ]
            value = got[0]
            for h in got[1:] + proof:
                value = sha256(b"\x01" + value + h).digest()
            base_inc.append(time.perf_counter() - start)
        for old in olds:
            start = time.perf_counter()
            plan = consistency_plan(old, n)
            proof = plan.assemble(tree_nodes(session, [(x.level, x.index) for x in plan.nodes]))
            verify_consistency(old, n, tree_root(session, old), head.root, proof)
            ours_con.append(time.perf_counter() - start)
    raw.close()
    ms = 1000
    return [
        f"{'inclusion proof from storage, gen + verify':<46}"
        f"{statistics.median(ours_inc) * ms:>9.2f} ms"
        f"{statistics.median(base_inc) * ms:>12.2f} ms  (bare reads of the same"
        f" {statistics.median(rows_read):.0f} rows + SHA-256)",
        f"{'consistency proof from storage, gen + verify':<46}"
        f"{statistics.median(ours_con) * ms:>9.2f} ms"
        "   (includes the old root, read from storage too)",
    ]


def memory_proofs(leaves: list[bytes]) -> list[str]:
    n = len(leaves)
    hashes = [sha256(b"\x00" + leaf).digest() for leaf in leaves]
    tree: list[MerkleTree] = []
    build = timed(lambda: tree.append(MerkleTree(hashes)))
    rng = random.Random(11)
    head = tree[0].root()
    per_proof = []
    for _ in range(200):
        i = rng.randrange(n)
        start = time.perf_counter()
        verify_inclusion(hashes[i], i, n, tree[0].inclusion_proof(i), head)
        per_proof.append(time.perf_counter() - start)
    i = rng.randrange(n)
    one_shot = timed(lambda: verify_inclusion(hashes[i], i, n, inclusion_proof(i, hashes), head))
    return [
        f"{'inclusion proof, MerkleTree in memory':<46}"
        f"{statistics.median(per_proof) * 1e6:>9.1f} us   (after building it: {build:.2f} s)",
        f"{'inclusion proof, one-shot from leaf hashes':<46}{one_shot:>9.2f} s"
        "    (hashes the whole tree)",
    ]


# --- 3. Whole-log verification -----------------------------------------------------------


def timed_both(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call (CPU is what a loaded machine does not
    inflate)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def whole_log(db: Database, path: Path, leaves: list[bytes]) -> list[str]:
    report: list[AuditReport] = []
    ours = timed_both(lambda: report.append(_verify(db)))
    assert report[0].ok, report[0].problem
    in_memory = timed_both(lambda: [sha256(b"\x00" + leaf).digest() for leaf in leaves])

    def bare_select() -> None:
        raw = sqlite3.connect(path)
        for (leaf,) in raw.execute('SELECT leaf FROM audit_leaves ORDER BY "index"'):
            sha256(b"\x00" + leaf).digest()
        raw.close()

    selected = timed_both(bare_select)

    def line(label: str, figures: tuple[float, float], note: str) -> str:
        wall, cpu = figures
        return f"{label:<46}{wall:>9.2f} s    (CPU {cpu:.2f} s; {note})"

    return [
        line("whole-log verification (audit_verify)", ours, "target < 10 s"),
        line("  baseline: bare SHA-256 of the leaves", in_memory, "in memory"),
        line("  baseline: bare SELECT + SHA-256", selected, "sqlite3, no checks"),
    ]


def _verify(db: Database) -> AuditReport:
    with db.session(readonly=True) as session:
        return audit_verify(session)


# --- 4. The node under load -------------------------------------------------------------


def _log_size(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as c:
        row = c.execute("SELECT size FROM audit_state WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


async def _closed_loop(node: Any, seconds: float, concurrency: int) -> tuple[int, int]:
    import httpx

    from bench.gateway import CONTENT_TYPE, small_request

    body, ok, failed = small_request(), 0, 0
    headers = {"authorization": f"Bearer {node.operator_token}", "content-type": CONTENT_TYPE}
    context = node.ssl_context()
    clients = [
        httpx.AsyncClient(verify=context, timeout=60.0, headers=headers) for _ in range(concurrency)
    ]
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal ok, failed
        while time.monotonic() < deadline:
            response = await client.post(f"{node.local_url}/api/v1/messages", content=body)
            if response.status_code == 201:
                ok += 1
            else:
                failed += 1

    try:
        await asyncio.gather(*[worker(c) for c in clients])
    finally:
        for c in clients:
            await c.aclose()
    return ok, failed


def node_under_load(work: Path, seconds: float, concurrency: int) -> list[str]:
    from accord.gateway.audit import log as _audit
    from accord.gateway.audit.log import EventKind
    from bench import _nodes

    lines = []
    # The micro-figure first, on a plain database: a typical event recorded in its own
    # transaction, against a bare append of the same bytes.
    db = fresh(work / "record.db")
    sample = _audit.event(
        EventKind.MESSAGE_SENT,
        "МВД-РБ",
        NOW,
        message_id="5b0c4a8e-1d2f-4e3a-9b6c-7d8e9f0a1b2c",
        sender="МВД-РБ",
        recipient="Росгвардия",
        user="Оператор",
        marking={"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        digests={"statement": "ab" * 32, "envelope": "cd" * 32},
    )
    leaf = sample.to_leaf()

    def bare() -> None:
        with db.session() as session:
            append_leaf(session, leaf, NOW)

    def ours() -> None:
        with db.session() as session:
            _audit.record(session, sample)

    base, mine = alternate(bare, ours, 5, 4.0)
    db.close()
    lines.append(
        f"{'record(event), 1 per transaction':<46}{mine:>10.0f}/s{base:>13.0f}/s   "
        f"{mine / base:.2f}  (bare append_leaf)"
    )
    a, b = _nodes.make_pair(work / "nodes")
    with _nodes.running(a, b, logs=work) as processes:
        time.sleep(1.0)
        start_sizes = (_log_size(a.database), _log_size(b.database))
        cpu0 = [p.cpu_seconds() for p in processes]
        started = time.perf_counter()
        sent, failed = asyncio.run(_closed_loop(a, seconds, concurrency))
        elapsed = time.perf_counter() - started
        end_sizes = (_log_size(a.database), _log_size(b.database))
        cpu = [p.cpu_seconds() - c for p, c in zip(processes, cpu0, strict=True)]
        # Let delivery catch up, then check what the auditor would.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _log_size(b.database) - start_sizes[1] < sent:
            time.sleep(0.5)
        with (
            Database.open(f"sqlite:///{a.database}") as check,
            check.session(readonly=True) as session,
        ):
            report = audit_verify(session)
    leaves_a = end_sizes[0] - start_sizes[0]
    leaves_b = end_sizes[1] - start_sizes[1]
    load = os.getloadavg()
    lines += [
        f"node under load: {concurrency} clients for {elapsed:.1f} s:"
        f" {sent / elapsed:.0f} messages/s accepted by A ({failed} refused)",
        f"  audit leaves appended: A {leaves_a / elapsed:.0f}/s, B {leaves_b / elapsed:.0f}/s"
        f" (CPU A {cpu[0] / elapsed:.2f}, B {cpu[1] / elapsed:.2f} cores)",
        f"  A's log afterwards: {report.size:,} leaves, {report.checkpoints_verified}"
        f" checkpoint(s) verified, {'consistent' if report.ok else report.problem}",
        f"  machine load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        f" on {os.cpu_count()} cores",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Accord audit log benchmarks")
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="per append figure")
    parser.add_argument("--samples", type=int, default=50, help="proofs timed at each size")
    parser.add_argument("--node-seconds", type=float, default=20.0, help="0: skip section 4")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="accord-bench-audit-") as tmp:
        small_path, big_path = Path(tmp) / "small.db", Path(tmp) / "big.db"
        small, big = fresh(small_path), fresh(big_path)
        rows = appends(small, args.rounds, args.seconds, "empty log")
        start = time.perf_counter()
        leaves = bulk_log(big, big_path, args.leaves)
        built = time.perf_counter() - start
        verify_lines = whole_log(big, big_path, leaves)
        proof_lines = storage_proofs(big, big_path, leaves, args.samples)
        rows += appends(big, args.rounds, args.seconds, f"log of {args.leaves:,}")
        memory_lines = memory_proofs(leaves)
        small.close()
        big.close()
        node_lines = (
            node_under_load(Path(tmp), args.node_seconds, args.concurrency)
            if args.node_seconds > 0
            else []
        )

    print(f"== audit log, SQLite, {args.leaves:,} leaves (bulk-built in {built:.1f} s) ==")
    print(
        f"(appends: median of {args.rounds} alternating rounds; proofs: median of {args.samples})"
    )
    print(f"{'':<46}{'ours':>12}{'baseline':>15}   ratio")
    for label, ours, base in rows:
        print(f"{label:<46}{ours:>10.0f}/s{base:>13.0f}/s   {ours / base:.2f}  (bare INSERT)")
    for line in proof_lines + memory_lines + verify_lines + node_lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
