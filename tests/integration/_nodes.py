"""Real Accord nodes on loopback, for the integration tests.

A `Cluster` creates node homes with the admin functions (`gateway._admin`), adds users,
exchanges signed descriptors checked against their fingerprints (every node trusts every
other), and runs each node as a real `accord serve` subprocess on free loopback ports.
A `NodeProcess` is started, stopped (SIGTERM), killed (SIGKILL) and restarted by the
tests; `Cluster.close()` always ends every process it started, whatever happened.

Invariants:
- A node is "started" only once its local API answers `/api/v1/health` over HTTPS and its
  peer API port accepts connections; a process that exits during start-up fails the start
  with the tail of its log.
- Every process started is ended by `Cluster.close()` (the fixtures call it whatever
  happened): SIGTERM first, SIGKILL after a grace period. An `atexit` hook kills any
  left over if the test process itself is interrupted before its teardown.
- Signatories are added before descriptors are exchanged: a descriptor carries the
  signatory keys its Party's peers accept (agreement art. 4.4).
- Waiting is always bounded (`wait_until`) and never asserts on durations.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from accord.crypto import KdfCost
from accord.gateway.admin.home import InitResult, add_peer, add_user, export_descriptor, init_node
from accord.gateway.node.config import Home
from accord.storage import Database

__all__ = [
    "KDF",
    "NODE_PASSPHRASE",
    "Cluster",
    "LocalUser",
    "NodeProcess",
    "free_port",
    "multipart",
    "wait_until",
]

HOST = "127.0.0.1"
# Cheap Argon2id for the seal, encryption and signatory key files: tests, not production.
KDF = KdfCost(2, 8 * 1024 * 1024)
NODE_PASSPHRASE = "пароль узла: тест"
START_TIMEOUT = 60.0
# How long `stop()` waits after SIGTERM before SIGKILL. A node stops in about a second,
# except while a peer holds an idle keep-alive connection to its peer API: it then waits
# for that connection's TLS close for 30 s (see test_delivery's strict xfail), which the
# harness does not wait out.
STOP_GRACE = 3.0
KILL_TIMEOUT = 15.0
# Short, bounded delivery settings, so that retries happen within a test: a retry at most
# every second, and no message is given up on during a test. The lease keeps its default
# (minutes): a node restarted after kill -9 must take back its own leases, not wait for
# them to expire.
TEST_DELIVERY = {
    "base_delay": 0.2,
    "max_delay": 1.0,
    "poll_interval": 0.1,
    "max_attempts": 100_000,
    "connect_timeout": 3.0,
}

_live: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    """The last resort: a test run interrupted before its fixtures' teardown."""
    for process in list(_live):
        with contextlib.suppress(OSError):
            process.kill()


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _free_port_pair() -> tuple[int, int]:
    """Two distinct free ports (the peer API's and the local API's)."""
    while True:
        listen, local = free_port(), free_port()
        if listen != local:
            return listen, local


T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 45.0,
    interval: float = 0.1,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy and return it; fail after `timeout`
    saying what was awaited (and, with `diagnose`, what the nodes logged)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{diagnose()}" if diagnose is not None else ""
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LocalUser:
    name: str
    role: str
    clearance: str
    token: str
    passphrase: str | None = None


class NodeProcess:
    """One node: its home, its users, and the `accord serve` process running it."""

    def __init__(self, cluster: Cluster, root: Path, party: str, name: str, database: str | None):
        self.cluster = cluster
        self.party = party
        self.name = name
        self.home_dir = root
        self.home = Home(root)
        self.log_file = root.parent / f"{root.name}.log"
        listen, local = _free_port_pair()
        self.init: InitResult = init_node(
            root,
            party=party,
            name=name,
            listen=f"{HOST}:{listen}",
            local=f"{HOST}:{local}",
            database=database,
            passphrase=NODE_PASSPHRASE.encode("utf-8"),
            now=_now(),
            kdf_cost=KDF,
        )
        self.configure(delivery=TEST_DELIVERY)
        self.users: dict[str, LocalUser] = {}
        self.descriptor: bytes | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ssl = ssl.create_default_context(cafile=str(self.init.ca_file))

    def __repr__(self) -> str:
        return f"NodeProcess({self.party!r}, running={self.running})"

    # -- Set-up ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The local API's base URL."""
        return self.init.node_url

    @property
    def peer_url(self) -> str:
        return self.init.peer_url

    @property
    def fingerprint(self) -> str:
        return self.init.fingerprint

    @property
    def admin_token(self) -> str:
        return self.init.admin_token

    @property
    def certificate_pem(self) -> bytes:
        """The TLS certificate peers pin (and local clients trust)."""
        return self.init.ca_file.read_bytes()

    @property
    def database_url(self) -> str:
        return self.home.load_config().database

    def configure(self, **changes: Any) -> None:
        """Change config.toml (it takes effect at the next start). `delivery=` takes a
        mapping of the delivery settings to change."""
        config = self.home.load_config()
        if "delivery" in changes:
            changes["delivery"] = replace(config.delivery, **changes["delivery"])
        self.home.save_config(config.with_changes(**changes))

    def add_user(
        self, name: str, *, role: str, clearance: str = "OFFICIAL", passphrase: str | None = None
    ) -> LocalUser:
        result = add_user(
            self.home,
            name,
            role=role,
            clearance=clearance,
            signatory_passphrase=passphrase.encode("utf-8") if passphrase else None,
            now=_now(),
            kdf_cost=KDF,
        )
        user = LocalUser(name, role, result.clearance, result.token, passphrase)
        self.users[name] = user
        return user

    def export(self) -> bytes:
        self.descriptor = export_descriptor(self.home, NODE_PASSPHRASE.encode("utf-8"), _now())
        return self.descriptor

    def trust(self, peer: NodeProcess) -> None:
        """Add `peer` from its descriptor, refusing it unless its fingerprint matches the
        one its admin read out (here: the one `init` printed)."""
        descriptor = peer.descriptor or peer.export()
        add_peer(self.home, descriptor, fingerprint=peer.fingerprint, now=_now())

    # -- The process -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, wait: bool = True) -> None:
        if self.running:
            raise RuntimeError(f"{self.party} is already running")
        env = dict(os.environ)
        for var in ("ACCORD_NODE", "ACCORD_TOKEN", "ACCORD_CA", "ACCORD_SIGNATORY_PASSPHRASE"):
            env.pop(var, None)
        env.update(ACCORD_PASSPHRASE=NODE_PASSPHRASE, PYTHONUNBUFFERED="1")
        command = [
            sys.executable,
            "-c",
            "from accord.gateway.cli import main; main()",
            "serve",
            "--home",
            str(self.home_dir),
        ]
        with self.log_file.open("ab") as log:
            log.write(f"\n===== start {_now().isoformat()} =====\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C of the test run goes to pytest, whose fixtures
                # then stop the nodes, rather than to every node directly.
                start_new_session=True,
            )
        _live.add(self._process)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        config = self.home.load_config()

        def ready() -> bool:
            if not self.running:
                raise RuntimeError(
                    f"node {self.party} exited during start-up "
                    f"(code {self._process.returncode if self._process else None})\n"
                    + self.log_tail()
                )
            try:
                with socket.create_connection((config.listen.host, config.listen.port), 0.5):
                    pass
                response = httpx.get(f"{self.url}/api/v1/health", verify=self._ssl, timeout=2)
            except (OSError, httpx.TransportError):
                return False
            return response.status_code == 200 and response.json().get("party") == self.party

        wait_until(ready, what=f"node {self.party} to start", timeout=timeout, interval=0.05)

    def terminate(self) -> None:
        """Send SIGTERM without waiting (`stop()` waits)."""
        if self.running:
            assert self._process is not None
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_GRACE) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop within `timeout`; returns the exit
        code of the SIGTERM'd process (None if it had to be killed, or was not running)."""
        process = self._process
        if process is None:
            return None
        code: int | None = None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    code = process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(KILL_TIMEOUT)
            else:
                code = process.returncode
        finally:
            _live.discard(process)
            self._process = None
        return code

    def kill9(self) -> None:
        """SIGKILL: the node gets no chance to finish anything."""
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.kill()
            process.wait(KILL_TIMEOUT)
        finally:
            _live.discard(process)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_file.read_text("utf-8", errors="replace")
        except OSError:
            return f"(no log for {self.party})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.party}'s log ({self.log_file}) ---\n{tail}"

    # -- Talking to it -----------------------------------------------------------------

    def client(self, user: LocalUser | str | None = None, **kwargs: Any) -> httpx.Client:
        """An HTTPS client of the local API, trusting only the node's certificate, with
        `user`'s token (a LocalUser, a user name, "admin", or None for no token)."""
        headers: dict[str, str] = {}
        if user is not None:
            if isinstance(user, str):
                token = self.admin_token if user == "admin" else self.users[user].token
            else:
                token = user.token
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, verify=self._ssl, headers=headers, **kwargs)

    def send(
        self,
        user: LocalUser | str,
        *,
        to: NodeProcess | str,
        attachments: Sequence[tuple[str, bytes]] = (),
        **meta: Any,
    ) -> httpx.Response:
        """POST a message as `user` (a notice marked OFFICIAL unless `meta` says
        otherwise); a signatory's request carries the signatory's passphrase."""
        sender = self.users[user] if isinstance(user, str) else user
        meta.setdefault("type", "notice")
        meta.setdefault("marking", {"level": "OFFICIAL", "caveats": []})
        meta.setdefault("purpose", "проверка связи по соглашению")
        meta.setdefault("body", "")
        meta["to"] = to.party if isinstance(to, NodeProcess) else to
        meta["attachments"] = [name for name, _ in attachments]
        if sender.role == "signatory" and meta["type"] == "request":
            meta.setdefault("signatory_passphrase", sender.passphrase)
        with self.client(sender) as client:
            return client.post("/api/v1/messages", files=multipart(meta, attachments))

    def status(self, message_id: str, user: LocalUser | str = "admin") -> dict[str, Any]:
        """The message's status and timeline (`/status`); fails unless it exists."""
        with self.client(user) as client:
            response = client.get(f"/api/v1/messages/{message_id}/status")
        assert response.status_code == 200, (message_id, response.status_code, response.text)
        data: dict[str, Any] = response.json()
        return data

    def events(self, message_id: str) -> list[str]:
        return [e["event"] for e in self.status(message_id)["events"]]

    def box(self, box: str = "inbox", user: LocalUser | str = "admin") -> list[dict[str, Any]]:
        with self.client(user) as client:
            response = client.get("/api/v1/messages", params={"box": box, "limit": 500})
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows

    def box_ids(self, box: str = "inbox") -> list[str]:
        return [row["message_id"] for row in self.box(box)]

    def wait_for_status(
        self, message_id: str, wanted: str = "delivered", timeout: float = 45.0
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(message_id)
            if status["status"] == "failed" and wanted != "failed":
                raise AssertionError(f"{message_id} failed: {status}\n{self.cluster.diagnose()}")
            return status if status["status"] == wanted else None

        return wait_until(
            reached,
            what=f"{message_id} to be {wanted} at {self.party}",
            timeout=timeout,
            diagnose=self.cluster.diagnose,
        )

    @contextlib.contextmanager
    def database(self) -> Iterator[Database]:
        """The node's database, opened from the test process (read while it runs)."""
        db = Database.open(self.database_url)
        try:
            yield db
        finally:
            db.close()

    def blobs(self) -> set[str]:
        """The committed blobs (relative paths under blobs/, temporary files excluded)."""
        root = self.home.blobs
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != "tmp"
        }

    def temp_blobs(self) -> set[str]:
        return {p.name for p in (self.home.blobs / "tmp").glob("*")}


class Cluster:
    """The nodes of one test module, their homes under `root`; `close()` stops them."""

    def __init__(self, root: Path, new_database: Callable[[], str | None]) -> None:
        self.root = root
        self._new_database = new_database
        self.nodes: list[NodeProcess] = []

    def add(self, *parties: str) -> list[NodeProcess]:
        """Create a node for each party (side by side: most of the time goes to Argon2id,
        which runs outside the GIL)."""
        first = len(self.nodes)
        # Cyrillic in the path too: the home, its SQLite URL and its blob folder.
        folders = [self.root / f"узел{first + i}" for i in range(len(parties))]
        with ThreadPoolExecutor(len(parties)) as pool:
            nodes = list(
                pool.map(
                    lambda spec: NodeProcess(
                        self, spec[0], spec[1], f"Узел {spec[1]}", self._new_database()
                    ),
                    zip(folders, parties, strict=True),
                )
            )
        self.nodes.extend(nodes)
        return nodes

    def connect(self, nodes: Sequence[NodeProcess] | None = None) -> None:
        """Every node trusts every other, each from the other's fingerprint-checked
        descriptor. Add signatories first: the descriptor carries their keys."""
        members = list(nodes or self.nodes)
        with ThreadPoolExecutor(len(members)) as pool:
            list(pool.map(NodeProcess.export, members))
        for node in members:
            for peer in members:
                if peer is not node:
                    node.trust(peer)

    def start(self, nodes: Sequence[NodeProcess] | None = None) -> None:
        """Start the nodes side by side, then wait for each."""
        members = list(nodes or self.nodes)
        for node in members:
            node.start(wait=False)
        for node in members:
            node.wait_ready()

    def diagnose(self) -> str:
        return "\n".join(node.log_tail(30) for node in self.nodes)

    def close(self) -> None:
        """Stop every node (each one even if another fails to stop). They are all asked at
        once, so that one waiting for its peers' connections to close is not waited for
        before those peers are even asked to stop."""
        for node in self.nodes:
            node.terminate()
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.stop()
            except BaseException as e:
                errors.append(e)
        if errors:
            raise errors[0]


def multipart(meta: Mapping[str, Any], attachments: Sequence[tuple[str, bytes]] = ()) -> Any:
    """The `files=` of a send request: the `meta` field first, then each attachment."""
    fields: list[tuple[str, tuple[str | None, bytes, str]]] = [
        ("meta", (None, json.dumps(meta, ensure_ascii=False).encode("utf-8"), "application/json"))
    ]
    fields += [
        ("attachment", (name, data, "application/octet-stream")) for name, data in attachments
    ]
    return fields
