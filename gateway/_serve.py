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
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import uvicorn

from crypto.tls import add_pins, local_server_context, server_context
from policy import profile_or_default
from storage import BlobStore, Database, PeerStatus, list_peers

from ._audit import AuditScheduler
from ._delivery import DeliveryWorker, PeerTransport
from ._keys import load_key_ring, peer_certificates
from ._keystore import NodeKeys
from ._peer_audit import PeerWitnessTransport
from ._peer_keys import KeyUpkeep
from ._runtime import Node, _descriptor_pem, utc_now
from ._tls import build_server
from .app import create_app, with_face
from .config import Home

__all__ = ["load_node", "serve"]

log = logging.getLogger("accord.serve")
PIN_REFRESH_SECONDS = 2.0


def load_node(home_dir: Path, passphrase: bytes, *, keys: NodeKeys | None = None) -> Node:
    """The node of `home_dir`; `keys` if they were opened already (see `accord serve`)."""
    home = Home(home_dir)
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


async def _refresh_pins(node: Node, context: object, known: set[str], stop: asyncio.Event) -> None:
    """Trust peers added by `accord peer add` while the node runs."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), PIN_REFRESH_SECONDS)
        except TimeoutError:
            pass
        try:
            current = await asyncio.to_thread(_peer_certificates, node)
        except Exception:
            log.exception("could not read the peer registry")
            continue
        new = {k: v for k, v in current.items() if k not in known}
        if new:
            add_pins(context, new.values())  # type: ignore[arg-type]
            known.update(new)
            node.forget_peer_cache()
            log.info("now trusting %d more peer certificate(s)", len(new))


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
    local_server = uvicorn.Server(
        uvicorn.Config(
            with_face(app, "local"),
            host=node.config.local.host,
            port=node.config.local.port,
            ssl_context_factory=lambda _c, _d: local_server_context(node.tls),
            log_config=None,
            log_level=log_level,
            server_header=False,
        )
    )
    for server in (peer_server, local_server):
        # This function owns the signals: uvicorn's own capture would stop one server only
        # and re-raise the signal afterwards.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    transport = PeerTransport(node)
    worker = DeliveryWorker(node, transport)
    tasks = [
        asyncio.create_task(peer_server.serve(), name="peer-api"),
        asyncio.create_task(local_server.serve(), name="local-api"),
        worker_task := asyncio.create_task(worker.run(stop), name="delivery"),
        asyncio.create_task(_refresh_pins(node, peer_context, set(pins), stop), name="pins"),
        asyncio.create_task(
            AuditScheduler(node, PeerWitnessTransport(transport), lambda: _active_peers(node)).run(
                stop
            ),
            name="audit",
        ),
        asyncio.create_task(KeyUpkeep(node, transport).run(stop), name="keys"),
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
