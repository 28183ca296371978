"""The local API of the audit trail, for auditors (DESIGN "Auditors verify without reading
content") and admins.

- `GET /api/v1/audit/head`: the log's size and root, the latest checkpoint with its
  cosignatures.
- `GET /api/v1/audit/leaves?start=&limit=`: the events (leaf bytes, base64, and decoded).
- `GET /api/v1/audit/checkpoints?since=&limit=`: signed checkpoints, cosigned.
- `GET /api/v1/audit/proofs/inclusion?index=&size=`, `.../consistency?old=&new=`.
- `GET /api/v1/audit/verify`: the whole log recomputed, every checkpoint and cosignature
  checked, then compared with what each peer cosigned (`_witness_check`); the first
  inconsistency named.
- `GET /api/v1/audit/witness/evidence`: forks of peers' logs this node refused.
- `GET /api/v1/messages/{id}/bundle`: the message's evidence bundle (`crypto.bundle`).
Everything here is events, digests, signatures and proofs: no endpoint returns content.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from accord.crypto import VerificationError
from accord.crypto.bundle import LogEvent, log_origin
from accord.gateway.api.local.messages import CurrentUser
from accord.gateway.audit import log as _audit
from accord.gateway.audit.witness_check import verify_with_witnesses, witness_now
from accord.gateway.messages.access import NotKnown, known_message
from accord.gateway.node.runtime import Node
from accord.storage import (
    Role,
    StorageError,
    User,
    latest_checkpoint,
    list_checkpoints,
    list_leaves,
    list_witness_evidence,
    tree_head,
    tree_root,
    tree_size,
)

__all__ = ["local_audit_router"]

AUDIT_ROLES = (Role.AUDITOR, Role.ADMIN)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _require_auditor(user: User) -> None:
    if user.role not in AUDIT_ROLES:
        raise HTTPException(
            403, f"a user with role {user.role.value} cannot read the audit log: ask an auditor"
        )


def _leaf(index: int, leaf: bytes, appended_at: Any) -> dict[str, Any]:
    try:
        decoded: Any = LogEvent.from_leaf(leaf).to_payload()
    except VerificationError:
        decoded = None
    return {
        "index": index,
        "leaf": _b64(leaf),
        "event": decoded,
        "appended_at": appended_at.isoformat(),
    }


def local_audit_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/audit/head")
    def head(user: CurrentUser) -> dict[str, Any]:
        _require_auditor(user)
        with node.db.session(readonly=True) as session:
            current = tree_head(session)
            latest = latest_checkpoint(session)
            note = None if latest is None else _audit.cosigned_note(session, latest)
        return {
            "party": node.party,
            "origin": log_origin(node.party),
            "size": current.size,
            "root": current.root.hex(),
            "checkpoint": note,
        }

    @router.get("/audit/leaves")
    def leaves(
        user: CurrentUser,
        start: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        _require_auditor(user)
        with node.db.session(readonly=True) as session:
            rows = list_leaves(session, start=start, limit=limit)
        return [_leaf(r.index, bytes(r.leaf), r.appended_at) for r in rows]

    @router.get("/audit/checkpoints")
    def checkpoints(
        user: CurrentUser,
        since: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        _require_auditor(user)
        with node.db.session(readonly=True) as session:
            rows = list_checkpoints(session, since=since, limit=limit)
            return [
                {
                    "size": c.size,
                    "root": bytes(c.root_hash).hex(),
                    "note": _audit.cosigned_note(session, c),
                    "created": c.created_at.isoformat(),
                }
                for c in rows
            ]

    @router.get("/audit/proofs/inclusion")
    def inclusion(
        user: CurrentUser,
        index: Annotated[int, Query(ge=0)],
        size: Annotated[int | None, Query(ge=1)] = None,
    ) -> dict[str, Any]:
        _require_auditor(user)
        with node.db.session(readonly=True) as session:
            n = tree_size(session) if size is None else size
            if not index < n <= tree_size(session):
                raise HTTPException(404, f"leaf {index} is not in a tree of {n} leaves here")
            proof = _audit.inclusion_proof(session, index, n)
            root = tree_root(session, n)
        return {"index": index, "size": n, "root": root.hex(), "proof": [_b64(p) for p in proof]}

    @router.get("/audit/proofs/consistency")
    def consistency(
        user: CurrentUser,
        old: Annotated[int, Query(ge=0)],
        new: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        _require_auditor(user)
        with node.db.session(readonly=True) as session:
            n = tree_size(session) if new is None else new
            if not old <= n <= tree_size(session):
                raise HTTPException(404, f"no consistency proof from {old} to {n} here")
            proof = _audit.consistency_proof(session, old, n)
            roots = tree_root(session, old), tree_root(session, n)
        return {
            "old_size": old,
            "new_size": n,
            "old_root": roots[0].hex(),
            "new_root": roots[1].hex(),
            "proof": [_b64(p) for p in proof],
        }

    @router.get("/audit/verify")
    async def verify(user: CurrentUser) -> dict[str, Any]:
        _require_auditor(user)
        # The local check, then each peer's record of what it cosigned (issue 12).
        return await verify_with_witnesses(node)

    @router.get("/audit/witness/evidence")
    def evidence(user: CurrentUser) -> list[dict[str, Any]]:
        _require_auditor(user)
        with node.db.session(readonly=True) as session:
            rows = list_witness_evidence(session)
        return [
            {
                "party": r.party,
                "size": r.size,
                "root": bytes(r.root_hash).hex(),
                "note": r.note,
                "reason": r.reason,
                "detected": r.detected_at.isoformat(),
            }
            for r in rows
        ]

    @router.get("/messages/{message_id}/bundle")
    async def bundle(message_id: str, user: CurrentUser) -> Response:
        """The evidence bundle of a message: statement, receipts, consent tokens with their
        revocations and forward statements (art. 7.3), log entries with their inclusion
        proofs and the cosigned checkpoint. No content."""
        _may_export(node, user, message_id)
        try:
            # The export's own entry ends the message's chain; the peers are asked to
            # cosign the checkpoint that covers it before the bundle is built on it.
            head = await asyncio.to_thread(_audit.seal_export, node, message_id, user=user.name)
            await witness_now(node)
            data = await asyncio.to_thread(
                _audit.export_bundle, node, message_id, user=user.name, head=head
            )
        except _audit.ExportError as e:
            raise HTTPException(409, str(e)) from e
        except StorageError as e:
            raise HTTPException(503, f"the bundle could not be made ({e}): try again") from e
        return Response(content=data, media_type="application/json")

    return router


def _may_export(node: Node, user: User, message_id: str) -> None:
    """Auditors export any bundle (by role); admins those art. 6.3 lets them know of;
    operators and signatories those of messages within their clearance of the governing
    marking (a bundle shows the marking and purpose, not the content). A forbidden
    message answers as a missing one (`_authority.known_message`)."""
    try:
        known_message(node, user, message_id)
    except NotKnown as e:
        raise HTTPException(404, str(e)) from e
