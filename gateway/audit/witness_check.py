"""The whole-log check against what the peers witnessed (issue 12, DESIGN guarantee 7).

`storage.audit_verify` and `_audit.verify_log` find every inconsistency *inside* the
database. A thief of the database who deletes the tail of the log and rewrites the
checkpoints, cosignatures and state row to match leaves nothing inside it to find: the
evidence of the lost tail is only where the thief cannot reach, on the peers that
cosigned it.

So the check uses the peer's side, not this node's: each peer keeps the latest checkpoint
of our log it cosigned (`witnessed_checkpoints`, written by `_peer_audit.witness`), and
answers `GET /peer/v1/audit/witnessed` over mutual TLS with that note, only for the
asking peer's own log. The cosignatures this node stored are in the very database under
suspicion, so they prove nothing about a truncation.

Checklist of `check_witnesses`, after the local check passed:
 1. Ask every active peer for the latest checkpoint of our log it cosigned.
 2. The note must be a checkpoint of our origin signed by one of our seal keys (any in
    our key history) and carry the peer's cosignature by one of its trusted seals: a
    peer cannot make us report a history we never signed.
 3. Its size must not exceed our log's size (`truncated`: the leaves in between were
    deleted), and our tree at its size must have its root (`forked`: rewritten).
 4. A peer that cannot be asked is reported as not checked (a warning), never as proof:
    detection is as fresh as the last cosignature, and only as wide as the peers asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from accord.crypto import VerificationError, VerifyKey
from accord.crypto.bundle import log_origin, witness_name
from accord.crypto.checkpoint import verify_checkpoint, verify_cosignature
from accord.gateway.messages.receive import REFUSED, _authenticated_peer
from accord.gateway.node.runtime import Node, PeerKeys, PeerUnknown
from accord.storage import (
    KeyKind,
    PeerStatus,
    StorageError,
    latest_witnessed,
    list_keys,
    list_peers,
    tree_root,
)

__all__ = [
    "WITNESSED_PATH",
    "check_witnesses",
    "peer_witnessed_router",
    "verify_with_witnesses",
    "witness_now",
]

log = logging.getLogger("accord.audit")
WITNESSED_PATH = "/peer/v1/audit/witnessed"
ASK_TIMEOUT = 10.0

# Asks one peer for the latest note of our log it cosigned: (HTTP status, JSON body).
AskWitness = Callable[[PeerKeys], Awaitable[tuple[int, Any]]]


def peer_witnessed_router(node: Node) -> APIRouter:
    """`GET /peer/v1/audit/witnessed`: the latest checkpoint of the asking peer's own log
    that this node cosigned, as the cosigned note (`{"note": null}` before the first)."""
    router = APIRouter()

    @router.get(WITNESSED_PATH, include_in_schema=False)
    def witnessed(request: Request) -> JSONResponse:
        party = _authenticated_peer(node, request)
        if party is None:
            log.warning("witnessed-checkpoint request refused: certificate not pinned")
            return JSONResponse(REFUSED, status_code=403)
        try:
            with node.db.session(readonly=True) as session:
                latest = latest_witnessed(session, party)
        except StorageError as e:
            log.error("witnessed-checkpoint request from %s failed: %s", party, e)
            return JSONResponse({"error": "retry"}, status_code=503)
        return JSONResponse({"note": None if latest is None else latest.note})

    return router


def _seals(node: Node, owner: str) -> list[VerifyKey]:
    with node.db.session(readonly=True) as session:
        return [
            VerifyKey.from_dict(k.public)
            for k in list_keys(session, owner=owner)
            if k.kind is KeyKind.SEAL
        ]


def _active(node: Node) -> list[str]:
    with node.db.session(readonly=True) as session:
        return [p.party_id for p in list_peers(session) if p.status is PeerStatus.ACTIVE]


def _compare(node: Node, peer: PeerKeys, note: str, size: int) -> dict[str, Any]:
    """Steps 2 and 3 for one peer's note; the finding as a dict."""
    origin = log_origin(node.party)
    signed = None
    for key in _seals(node, node.party):
        try:
            signed = verify_checkpoint(note, origin, origin, key).checkpoint
            break
        except VerificationError:
            continue
    if signed is None:
        return {"party": peer.party, "status": "invalid",
                "detail": "its note is not a checkpoint our seal signed"}  # fmt: skip
    cosigned_at = None
    for key in peer.seals.values():
        try:
            cosigned_at = verify_cosignature(note, witness_name(peer.party), key).signed_at
            break
        except VerificationError:
            continue
    if cosigned_at is None:
        return {"party": peer.party, "status": "invalid",
                "detail": "its note does not carry its own cosignature"}  # fmt: skip
    found: dict[str, Any] = {
        "party": peer.party,
        "size": signed.size,
        "root": signed.root.hex(),
        "cosigned": cosigned_at.isoformat(),
    }
    if signed.size > size:
        return found | {
            "status": "truncated",
            "detail": f"{peer.party} cosigned a checkpoint of size {signed.size} on "
            f"{cosigned_at.isoformat()}, but the log has {size} entries: the entries "
            f"[{size}, {signed.size}) were deleted",
        }
    with node.db.session(readonly=True) as session:
        ours = tree_root(session, signed.size)
    if ours != signed.root:
        return found | {
            "status": "forked",
            "detail": f"{peer.party} cosigned a checkpoint of size {signed.size} with root "
            f"{signed.root.hex()[:16]}…, but the log's first {signed.size} entries have root "
            f"{ours.hex()[:16]}…: the log was rewritten",
        }
    return found | {"status": "consistent"}


async def check_witnesses(
    node: Node, report: dict[str, Any], ask: AskWitness, *, timeout: float = ASK_TIMEOUT
) -> dict[str, Any]:
    """`report` (from `_audit.verify_log`) with `witnesses` (one finding per active peer)
    and `warnings` added; a truncation or rewrite a peer's record reveals becomes the
    report's problem (kind `truncated` or `forked`) when the local check found none."""
    report = dict(report)
    findings: list[dict[str, Any]] = []
    warnings: list[str] = []
    size = int(report.get("size") or 0)
    for party in await asyncio.to_thread(_active, node):
        try:
            peer = node.peer_keys(party)
            status, body = await asyncio.wait_for(ask(peer), timeout)  # 1
        except (PeerUnknown, OSError, TimeoutError, ValueError) as e:
            found: dict[str, Any] = {"party": party, "status": "unreachable",
                                     "detail": type(e).__name__}  # fmt: skip
        except Exception as e:  # any transport failure: reported, never a pass
            found = {"party": party, "status": "unreachable", "detail": type(e).__name__}
        else:
            note = body.get("note") if status == 200 and isinstance(body, dict) else None
            if status != 200 or not isinstance(body, dict):
                found = {"party": party, "status": "unreachable", "detail": f"HTTP {status}"}
            elif note is None:
                found = {"party": party, "status": "none"}
            elif not isinstance(note, str):
                found = {"party": party, "status": "invalid", "detail": "not a note"}
            else:
                found = await asyncio.to_thread(_compare, node, peer, note, size)
        findings.append(found)
        if found["status"] in ("unreachable", "invalid"):
            warnings.append(
                f"{party} could not confirm the log ({found.get('detail')}): a truncation "
                "behind a checkpoint only it cosigned would not be seen; run the check again"
            )
    report["witnesses"] = findings
    report["warnings"] = warnings
    if report.get("ok"):
        bad = next((f for f in findings if f["status"] in ("truncated", "forked")), None)
        if bad is not None:
            report["ok"] = False
            report["problem"] = {
                "kind": bad["status"],
                "index": min(size, int(bad["size"])),
                "detail": bad["detail"],
            }
    return report


async def verify_with_witnesses(node: Node) -> dict[str, Any]:
    """`_audit.verify_log`, then `check_witnesses` over mutual TLS to every active peer."""
    from accord.gateway.audit import log as _audit
    from accord.gateway.messages.delivery import PeerTransport

    report = await asyncio.to_thread(_audit.verify_log, node)
    transport = PeerTransport(node)

    async def ask(peer: PeerKeys) -> tuple[int, Any]:
        response = await transport.client(peer).get(WITNESSED_PATH)
        try:
            body = response.json()
        except ValueError:
            body = None
        return response.status_code, body

    try:
        return await check_witnesses(node, report, ask)
    finally:
        await transport.aclose()


async def witness_now(node: Node, *, timeout: float = ASK_TIMEOUT) -> None:
    """Ask every active peer to cosign the latest checkpoint at once (an evidence bundle
    is about to be built on it), each within `timeout`; a peer that is down or refuses
    leaves the checkpoint as it is, and the bundle then says no witness cosigned it."""
    from accord.gateway.audit.log import request_cosignature
    from accord.gateway.audit.witness import PeerWitnessTransport
    from accord.gateway.messages.delivery import PeerTransport

    transport = PeerTransport(node)
    witnesses = PeerWitnessTransport(transport)

    async def one(party: str) -> None:
        try:
            peer = node.peer_keys(party)
            await asyncio.wait_for(request_cosignature(node, witnesses, peer), timeout)
        except Exception as e:  # the bundle is made anyway, and says what it lacks
            log.info("witnessing by %s for a bundle failed: %s: %s", party, type(e).__name__, e)

    try:
        await asyncio.gather(*(one(p) for p in await asyncio.to_thread(_active, node)))
    finally:
        await transport.aclose()
