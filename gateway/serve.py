"""`accord serve`: one process runs the peer API, the local API and the delivery worker.

SIGTERM or SIGINT stops it cleanly: both listeners stop accepting, requests in flight
finish, the worker ends its round. A SIGKILL loses nothing either: every accepted message
was committed before it was acknowledged, and leases of an interrupted delivery expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import uvicorn

from accord.crypto.keys import Passphrase
from accord.crypto.tls import (
    TlsError,
    TlsIdentity,
    add_pins,
    local_server_context,
    reload_identity,
    server_context,
)
from accord.gateway.app import create_app, with_face
from accord.gateway.audit.log import AuditScheduler
from accord.gateway.audit.witness import PeerWitnessTransport
from accord.gateway.keys.lifecycle import load_key_ring, peer_certificates
from accord.gateway.keys.store import NodeKeys
from accord.gateway.keys.upkeep import KeyUpkeep
from accord.gateway.messages.delivery import DeliveryWorker, PeerTransport
from accord.gateway.node.config import Home
from accord.gateway.node.runtime import Node, _descriptor_pem, utc_now
from accord.gateway.node.tls import MtlsConfig, build_server
from accord.policy import profile_or_default
from accord.storage import BlobStore, Database, PeerStatus, list_peers

__all__ = ["load_node", "serve"]

log = logging.getLogger("accord.serve")
PIN_REFRESH_SECONDS = 2.0


def load_node(home_dir: Path, passphrase: bytes, *, keys: NodeKeys | None = None) -> Node:
    """The node of `home_dir`; `keys` if they were opened already (see `accord serve`)."""
    home = Home(home_dir)
    # The node reopens its key files when they rotate: with a `Passphrase`, a file opened
    # once is never derived again (no Argon2id, and no 64 MiB peak, while it serves).
    passphrase = passphrase if isinstance(passphrase, Passphrase) else Passphrase(passphrase)
    config = home.load_config()
    if keys is None:
        # A wrong passphrase is reported before the database is opened.
        NodeKeys.load(home, passphrase)
    db = Database.open(config.database)
    db.migrate()

    # The node holds its passphrase to adopt rotated keys while it runs (gateway/_keys.py).
    def key_loader(now: datetime) -> NodeKeys:
        return load_key_ring(home, db, passphrase, now)

    keys = key_loader(utc_now())
    return Node(
        home=home,
        config=config,
        db=db,
        blobs=BlobStore(home.blobs),
        seal=keys.seal,
        encryption=keys.encryption,
        tls=keys.tls,
        profile=profile_or_default(home.profile_file),
        key_loader=key_loader,
    )


def _peer_certificates(node: Node) -> dict[str, bytes]:
    with node.db.session(readonly=True) as session:
        peers = [p for p in list_peers(session) if p.status is PeerStatus.ACTIVE]
        pins = {p.tls_cert_sha256: _descriptor_pem(p).encode("ascii") for p in peers}
        # Certificates announced by a TLS rotation, or still in its overlap window; they
        # win over the onboarding descriptor's, which a TLS rotation has made stale.
        return pins | peer_certificates(session)


def _active_peers(node: Node) -> list[str]:
    with node.db.session(readonly=True) as session:
        return [p.party_id for p in list_peers(session) if p.status is PeerStatus.ACTIVE]


class _Pins:
    """Trust peer certificates the registry gained while the node runs: a peer added by
    `accord peer add`, or a peer's rotated TLS certificate (from its key-change statement,
    at once, see `gateway._peer_keys`)."""

    def __init__(self, node: Node, context: ssl.SSLContext, known: set[str]) -> None:
        self._node = node
        self._context = context
        self._known = known
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            current = await asyncio.to_thread(_peer_certificates, self._node)
            new = {k: v for k, v in current.items() if k not in self._known}
            if new:
                add_pins(self._context, new.values())
                self._known.update(new)
                self._node.forget_peer_cache()
                log.info("now trusting %d more peer certificate(s)", len(new))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), PIN_REFRESH_SECONDS)
            except TimeoutError:
                pass
            try:
                await self.refresh()
            except Exception:
                log.exception("could not read the peer registry")


class _LiveTls:
    """Puts a rotated TLS identity into the running servers' contexts (issue 5: rotation
    without downtime; docs/adr/0010-key-rotation.md).

    - The peer API presents the identity the key ring chose for peers: the old one until
      every peer acknowledged the rotation (or half its overlap window passed), then the
      new one. Peers trust both during the overlap window.
    - The local API presents the home's current identity at once: local clients trust the
      home's `tls/tls.crt` (ACCORD_CA), which the rotation has just replaced.
    New handshakes use the new certificate; connections already open keep theirs.
    """

    def __init__(
        self,
        peer_context: ssl.SSLContext,
        peer_config: uvicorn.Config,
        local_context: ssl.SSLContext,
        identity: TlsIdentity,
    ) -> None:
        self._peer_context = peer_context
        self._peer_config = peer_config
        self._local_context = local_context
        self._peer = identity.fingerprint
        self._local = identity.fingerprint

    def __call__(self, peer_tls: TlsIdentity, local_tls: TlsIdentity) -> None:
        try:
            if peer_tls.fingerprint != self._peer:
                reload_identity(self._peer_context, peer_tls)
                if isinstance(self._peer_config, MtlsConfig):
                    self._peer_config.server_cert_pem = peer_tls.certificate_pem.decode("ascii")
                self._peer = peer_tls.fingerprint
                log.info("peer API now presents TLS certificate %s", peer_tls.fingerprint[:16])
            if local_tls.fingerprint != self._local:
                reload_identity(self._local_context, local_tls)
                self._local = local_tls.fingerprint
                log.info("local API now presents TLS certificate %s", local_tls.fingerprint[:16])
        except TlsError as e:
            # The contexts keep their previous certificate, which peers still trust.
            log.error("could not adopt the rotated TLS certificate: %s", e)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (it is a dependency on Linux and macOS):
    the same asyncio API, with the loop, its TLS and its sockets in C, which a busy node
    spends less CPU on; None (asyncio's own loop) elsewhere."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return None
    return uvloop.new_event_loop


async def _announce(ready: Callable[[], None], *servers: uvicorn.Server) -> None:
    while not all(s.started for s in servers):
        await asyncio.sleep(0.02)
    ready()


async def serve(
    node: Node,
    *,
    log_level: str = "warning",
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run the node until SIGTERM/SIGINT, or until `stop` is set when one is given (tests
    run nodes in threads, where signal handlers cannot be installed)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    app = create_app(node)
    pins = _peer_certificates(node)
    # A context needs at least one anchor; our own certificate is harmless there, since the
    # peer API also requires the client's certificate to be a registered peer's.
    peer_context = server_context(node.tls, [*pins.values(), node.tls.certificate_pem])
    peer_server = build_server(
        with_face(app, "peer"),  # type: ignore[arg-type]
        peer_context,
        host=node.config.listen.host,
        port=node.config.listen.port,
        server_cert_pem=node.tls.certificate_pem,
        log_level=log_level,
    )
    local_context = local_server_context(node.tls)
    local_server = uvicorn.Server(
        uvicorn.Config(
            with_face(app, "local"),
            host=node.config.local.host,
            port=node.config.local.port,
            ssl_context_factory=lambda _c, _d: local_context,
            log_config=None,
            log_level=log_level,
            server_header=False,
        )
    )
    for server in (peer_server, local_server):
        # This function owns the signals: uvicorn's own capture would stop one server only
        # and re-raise the signal afterwards.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    pin_refresher = _Pins(node, peer_context, set(pins))
    node.refresh_pins = pin_refresher.refresh
    transport = PeerTransport(node)
    worker = DeliveryWorker(node, transport)
    tasks = [
        asyncio.create_task(peer_server.serve(), name="peer-api"),
        asyncio.create_task(local_server.serve(), name="local-api"),
        worker_task := asyncio.create_task(worker.run(stop), name="delivery"),
        asyncio.create_task(pin_refresher.run(stop), name="pins"),
        asyncio.create_task(
            AuditScheduler(node, PeerWitnessTransport(transport), lambda: _active_peers(node)).run(
                stop
            ),
            name="audit",
        ),
        asyncio.create_task(
            KeyUpkeep(
                node,
                transport,
                _LiveTls(peer_context, peer_server.config, local_context, node.tls),
            ).run(stop),
            name="keys",
        ),
    ]
    # Kept apart from `tasks`: it ends once the node is up, which is no reason to stop.
    announcer = asyncio.create_task(_announce(ready, peer_server, local_server)) if ready else None
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error("%s stopped: %s", task.get_name(), task.exception())
    stop.set()
    peer_server.should_exit = True
    local_server.should_exit = True
    if announcer is not None:
        announcer.cancel()
    # The worker finishes its round, then our client connections to peers are closed
    # before waiting for our own servers: an idle keep-alive connection from each node to
    # the other would otherwise hold both servers open until asyncio's TLS close timeout.
    await asyncio.gather(worker_task, return_exceptions=True)
    await transport.aclose()
    await asyncio.gather(*tasks, return_exceptions=True)
    node.close()
