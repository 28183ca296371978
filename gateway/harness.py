"""Real nodes on loopback, for `accord demo` and the integration tests.

A `Harness` owns a folder of node homes (SQLite each) and the `accord serve` processes that
run them. Homes, users and peers are made with the admin API (`gateway._admin`, the code
behind `accord init`, `accord user add` and `accord peer add`); every node then runs as a
separate process, so nodes talk to each other over real mutual TLS exactly as deployed
nodes do.

Invariants:
- Descriptors are exchanged with the fingerprint that `init` reported, as an admin would
  after comparing it out of band; signatories are added before the exchange, since a peer
  trusts only the signatory keys its copy of the descriptor lists.
- `close()` always stops every process it started (SIGTERM, then SIGKILL after a grace
  period) and never raises; the caller owns the folder and removes it.
- Every failure is one `HarnessError` that says which node and where its log is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from accord.crypto import KdfCost
from accord.gateway.admin import home as _admin
from accord.gateway.keys.store import NODE_PASSPHRASE_VAR
from accord.gateway.node.config import Home
from accord.storage import Role

__all__ = ["Harness", "HarnessError", "HarnessNode", "accord_command", "free_port"]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class HarnessError(Exception):
    """A node could not be set up, started or reached."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def accord_command() -> list[str]:
    """How to run `accord` with this very Python: the console script installed next to the
    interpreter, else the CLI's entry point through `-c`."""
    script = Path(sys.executable).with_name("accord")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from accord.gateway.cli import main; main()"]


@dataclass
class HarnessNode:
    """One node: its home, the answers of `init`, its users' tokens and its process."""

    party: str
    name: str
    home: Path
    passphrase: str
    node_url: str
    peer_url: str
    ca_file: Path
    admin_token: str
    fingerprint: str
    tokens: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_file: Path | None = None
    _log: IO[bytes] | None = None

    def token(self, user: str) -> str:
        return self.tokens[user]

    def log_tail(self, lines: int = 20) -> str:
        """The end of the node's log, for error messages."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        text = self.log_file.read_text("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class Harness:
    """Node homes in `root` and the processes that serve them; a context manager."""

    def __init__(self, root: Path, *, kdf_cost: KdfCost | None = None) -> None:
        self.root = root
        self.kdf_cost = kdf_cost
        self.nodes: dict[str, HarnessNode] = {}

    def __enter__(self) -> Harness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- Homes -------------------------------------------------------------------------

    def add_node(self, key: str, *, party: str, name: str, passphrase: str) -> HarnessNode:
        """`accord init` a node in `root/key` on two free loopback ports."""
        home = self.root / key
        listen = f"{LOOPBACK}:{free_port()}"
        local = f"{LOOPBACK}:{free_port()}"
        try:
            result = _admin.init_node(
                home,
                party=party,
                name=name,
                listen=listen,
                local=local,
                passphrase=passphrase.encode("utf-8"),
                now=_now(),
                kdf_cost=self.kdf_cost,
            )
        except _admin.AdminError as e:
            raise HarnessError(f"cannot create the node {party}: {e}") from e
        node = HarnessNode(
            party=result.party,
            name=name,
            home=result.home,
            passphrase=passphrase,
            node_url=result.node_url,
            peer_url=result.peer_url,
            ca_file=result.ca_file,
            admin_token=result.admin_token,
            fingerprint=result.fingerprint,
        )
        node.tokens[result.admin_user] = result.admin_token
        self.nodes[key] = node
        return node

    def add_user(
        self,
        node: HarnessNode,
        user: str,
        *,
        role: Role,
        clearance: str = "CONFIDENTIAL",
        signatory_passphrase: str | None = None,
    ) -> str:
        """`accord user add`; returns the user's API token (also kept in `node.tokens`)."""
        try:
            result = _admin.add_user(
                Home(node.home),
                user,
                role=role,
                clearance=clearance,
                signatory_passphrase=(
                    None if signatory_passphrase is None else signatory_passphrase.encode("utf-8")
                ),
                now=_now(),
                kdf_cost=self.kdf_cost,
            )
        except _admin.AdminError as e:
            raise HarnessError(f"cannot add the user {user} to {node.party}: {e}") from e
        node.tokens[user] = result.token
        return result.token

    def connect(self, a: HarnessNode, b: HarnessNode) -> None:
        """`accord peer export` on each side and `accord peer add --fingerprint` on the
        other, with the fingerprint each node's `init` reported."""
        for this, other in ((a, b), (b, a)):
            try:
                descriptor = _admin.export_descriptor(
                    Home(this.home), this.passphrase.encode("utf-8"), _now()
                )
                _admin.add_peer(
                    Home(other.home), descriptor, fingerprint=this.fingerprint, now=_now()
                )
            except _admin.AdminError as e:
                raise HarnessError(f"cannot introduce {this.party} to {other.party}: {e}") from e

    # -- Processes ---------------------------------------------------------------------

    def start(self, *nodes: HarnessNode, timeout: float = START_TIMEOUT) -> None:
        """Start `accord serve` for each node, then wait until every local API answers."""
        for node in nodes:
            if node.process is not None:
                raise HarnessError(f"the node {node.party} is already running")
            node.log_file = node.home / "serve.log"
            node._log = node.log_file.open("ab")
            env = dict(os.environ)
            env[NODE_PASSPHRASE_VAR] = node.passphrase
            node.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
                [*accord_command(), "serve", "--home", str(node.home), "--log-level", "warning"],
                stdin=subprocess.DEVNULL,
                stdout=node._log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        for node in nodes:
            self._wait_healthy(node, deadline)

    def _wait_healthy(self, node: HarnessNode, deadline: float) -> None:
        context = ssl.create_default_context(cafile=str(node.ca_file))
        with httpx.Client(verify=context, timeout=2.0) as client:
            while True:
                assert node.process is not None
                if node.process.poll() is not None:
                    raise HarnessError(
                        f"the node {node.party} exited with status {node.process.returncode} "
                        f"while starting; its log ({node.log_file}) ends with:\n"
                        f"{node.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{node.node_url}/api/v1/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise HarnessError(
                        f"the node {node.party} did not answer at {node.node_url} in time; "
                        f"see its log {node.log_file}"
                    )
                time.sleep(0.1)

    def stop(self, *nodes: HarnessNode, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM every node's process, then SIGKILL what still runs after `timeout`.
        Never raises: it runs in `finally` blocks."""
        running = []
        for node in nodes:
            process, node.process = node.process, None
            if process is None:
                continue
            with contextlib.suppress(OSError):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            running.append(process)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    process.kill()
                with contextlib.suppress(subprocess.SubprocessError):
                    process.wait(timeout)
        for node in nodes:
            if node._log is not None:
                with contextlib.suppress(OSError):
                    node._log.close()
                node._log = None

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every node this harness started."""
        self.stop(*self.nodes.values(), timeout=timeout)


def _now() -> datetime:
    return datetime.now(UTC)
