"""Cross-witnessing over the peer API: a peer asks this node to cosign its log's checkpoint.

`POST /peer/v1/audit/witness`, over mutual TLS from a pinned peer, with
`{"checkpoint": <signed note>, "old_size": N, "proof": [base64 hashes]}`: the peer's latest
checkpoint and the RFC 9162 consistency proof from the last checkpoint of its log this
node cosigned (size N, 0 the first time). The exchange follows c2sp.org/tlog-witness.

Checklist (DESIGN guarantee 7: neither Party can rewrite its history unseen):
 1. The client certificate is pinned in the peer registry: it names the peer.
 2. The note is a checkpoint of that peer's log (origin `log_origin(peer)`), signed by one
    of its trusted seal keys.
 3. A checkpoint of a size this node already cosigned must have the same root: another
    root is a fork (two histories of one size), refused and kept as evidence.
 4. A checkpoint smaller than the latest one cosigned is a rollback: refused.
 5. `old_size` must be the size this node last cosigned; otherwise the answer is 409 with
    that size (`witnessed_size`), and the peer asks again with a proof from it.
 6. The consistency proof must show the last cosigned tree is a prefix of the new one;
    a proof that fails is an inconsistent larger tree (a fork), refused and kept as
    evidence.
 7. Only then does this node cosign (c2sp.org/tlog-cosignature with its seal key, as
    `witness_name(self)`), store the cosigned note, and answer with the cosignature line.
    A routine cosignature is not a leaf of this node's own log: each would make a new
    checkpoint here for the peer to cosign, and so on for ever. The stored notes are the
    record; forks, which are rare and grave, are leaves.
Every refusal looks the same to the peer (403 `{"error": "refused"}`); the reason goes to
this node's log, and a fork also to its audit trail with the peer's signed note.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from accord.crypto import VerificationError
from accord.crypto.bundle import log_origin, witness_name
from accord.crypto.checkpoint import (
    CheckpointEvidence,
    add_cosignature,
    parse_note,
    verify_checkpoint,
)
from accord.crypto.merkle import EMPTY_ROOT, verify_consistency
from accord.gateway.audit import log as _audit
from accord.gateway.messages.receive import REFUSED, _authenticated_peer
from accord.gateway.node.runtime import Node, PeerUnknown
from accord.storage import (
    DuplicateError,
    StorageError,
    add_witness_evidence,
    get_witnessed,
    latest_witnessed,
    record_witnessed,
)

__all__ = ["Fork", "PeerWitnessTransport", "Refused", "Stale", "peer_audit_router", "witness"]

log = logging.getLogger("accord.witness")
MAX_PROOF = 128


class Refused(Exception):
    """The checkpoint is not cosigned; the reason is for this node's log only."""


class Fork(Refused):
    """The peer signed a history that contradicts one this node cosigned."""


class Stale(Exception):
    """The peer's proof starts from another size than the one this node last cosigned."""

    def __init__(self, witnessed_size: int) -> None:
        super().__init__(f"the last cosigned size is {witnessed_size}")
        self.witnessed_size = witnessed_size


def _parse(document: Any) -> tuple[str, int, list[bytes]]:
    if not isinstance(document, dict) or set(document) != {"checkpoint", "old_size", "proof"}:
        raise Refused("a witness request has exactly checkpoint, old_size and proof")
    note, old_size, proof = document["checkpoint"], document["old_size"], document["proof"]
    if not isinstance(note, str) or not isinstance(proof, list) or len(proof) > MAX_PROOF:
        raise Refused("malformed witness request")
    if isinstance(old_size, bool) or not isinstance(old_size, int) or old_size < 0:
        raise Refused("old_size is not a non-negative integer")
    try:
        hashes = [base64.b64decode(p, validate=True) for p in proof]
    except (binascii.Error, TypeError, ValueError) as e:
        raise Refused("a proof hash is not base64") from e
    return note, old_size, hashes


def _verify_signed(node: Node, party: str, note: str) -> CheckpointEvidence:
    """Step 2."""
    try:
        seals = node.peer_keys(party).seals
    except PeerUnknown as e:
        raise Refused(f"{party} is not an active peer") from e
    origin = log_origin(party)
    for key in seals.values():
        try:
            return verify_checkpoint(note, origin, origin, key)
        except VerificationError:
            continue
    raise Refused(f"the checkpoint is not signed by a seal key of {party}")


def _fork(node: Node, party: str, evidence: CheckpointEvidence, note: str, reason: str) -> Fork:
    """Keep the peer's signed note as evidence, record the fork, and return the refusal."""
    checkpoint = evidence.checkpoint
    now = node.clock()
    with node.db.session() as session:
        add_witness_evidence(
            session,
            party=party,
            size=checkpoint.size,
            root_hash=checkpoint.root,
            note=note,
            reason=reason,
            now=now,
        )
        _audit.record(
            session,
            _audit.event(
                _audit.EventKind.WITNESS_FORK,
                node.party,
                now,
                peer=party,
                verdict="refused",
                digests={"checkpoint": _audit._sha256(note)},
                detail={"size": checkpoint.size, "reason": reason},
            ),
        )
    log.error("FORK in the audit log of %s at size %d: %s", party, checkpoint.size, reason)
    return Fork(reason)


def _our_line(note: str, name: str) -> str:
    lines = [s.line for s in parse_note(note).signatures if s.name == name]
    if not lines:
        raise Refused("the stored cosigned note lacks our line")
    return lines[-1]


def witness(node: Node, party: str, document: Any) -> str:
    """Steps 2-7 for a request from the authenticated `party`: return our cosignature line,
    or raise `Refused` (`Fork` for a contradicting history) or `Stale`."""
    note, old_size, proof = _parse(document)
    evidence = _verify_signed(node, party, note)  # 2
    checkpoint = evidence.checkpoint
    name = witness_name(node.party)
    with node.db.session(readonly=True) as session:
        same = get_witnessed(session, party, checkpoint.size)
        latest = latest_witnessed(session, party)
        same_root = None if same is None else bytes(same.root_hash)
        same_note = None if same is None else same.note
        latest_size = 0 if latest is None else latest.size
        latest_root = EMPTY_ROOT if latest is None else bytes(latest.root_hash)
    if same_root is not None and same_note is not None:  # 3
        if same_root != checkpoint.root:
            raise _fork(
                node,
                party,
                evidence,
                note,
                f"two roots for size {checkpoint.size}: {same_root.hex()[:16]}… was cosigned,"
                f" {checkpoint.root.hex()[:16]}… is presented",
            )
        return _our_line(same_note, name)
    if checkpoint.size < latest_size:  # 4
        raise Refused(f"checkpoint of size {checkpoint.size} is older than {latest_size}")
    if old_size != latest_size:  # 5
        raise Stale(latest_size)
    try:  # 6
        verify_consistency(latest_size, checkpoint.size, latest_root, checkpoint.root, proof)
    except VerificationError as e:
        raise _fork(
            node,
            party,
            evidence,
            note,
            f"size {checkpoint.size} is not consistent with the cosigned size {latest_size}:"
            f" {e.reason}",
        ) from e
    now = node.clock()  # 7
    cosigned = add_cosignature(note, name, node.seal, now).decode()
    try:
        with node.db.session() as session:
            record_witnessed(
                session,
                party=party,
                size=checkpoint.size,
                root_hash=checkpoint.root,
                note=cosigned,
                now=now,
            )
    except DuplicateError as e:
        raise Refused("a concurrent request cosigned another root of this size") from e
    return _our_line(cosigned, name)


def peer_audit_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/peer/v1/audit")

    @router.post("/witness", include_in_schema=False)
    async def witness_route(request: Request) -> JSONResponse:
        party = _authenticated_peer(node, request)  # 1
        if party is None:
            log.warning("witness request refused: client certificate not pinned to any peer")
            return JSONResponse(REFUSED, status_code=403)
        try:
            document = await request.json()
        except ValueError:
            log.warning("witness request from %s refused: not JSON", party)
            return JSONResponse(REFUSED, status_code=403)
        try:
            line = await asyncio.to_thread(witness, node, party, document)
        except Stale as e:
            return JSONResponse(
                {"error": "stale", "witnessed_size": e.witnessed_size}, status_code=409
            )
        except Refused as e:
            log.warning("witness request from %s refused: %s", party, e)
            return JSONResponse(REFUSED, status_code=403)
        except StorageError as e:
            log.error("witness request from %s failed: %s", party, e)
            return JSONResponse({"error": "retry"}, status_code=503)
        return JSONResponse({"cosignature": line})

    return router


class PeerWitnessTransport:
    """Sends witness requests to peers over the delivery worker's mutual-TLS clients."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    async def post_witness(self, peer: Any, document: dict[str, Any]) -> tuple[int, Any]:
        response = await self._transport.client(peer).post("/peer/v1/audit/witness", json=document)
        try:
            body = response.json()
        except ValueError:
            body = None
        return response.status_code, body
