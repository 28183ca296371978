"""The whole audit log for offline checking (issue 12; CLI.md "accord audit export").

`GET /api/v1/audit/key-changes` (auditors, admins): the seal rotations and revocations of
this node and of its peers, as signed (`_bundle_keys`), which link the seals that signed
the log's checkpoints and cosignatures to the Parties' current descriptors.

`export_log` assembles, through the local API, the file `crypto.auditlog.verify_log_export`
checks: the checkpoints first (each with its stored cosignatures), then every leaf up to
the log's end, so every checkpoint is covered by the leaves fetched after it. Nothing in
it is trusted by the checker: the node is the one under audit.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from accord.crypto.auditlog import LogExport
from accord.crypto.rotation import KeyChange
from accord.gateway.api.local.audit import _require_auditor
from accord.gateway.api.local.messages import CurrentUser
from accord.gateway.audit.bundle_keys import key_change_evidence, peer_key_change_evidence
from accord.gateway.client.local import LocalClient
from accord.gateway.node.runtime import Node
from accord.storage import list_peers

__all__ = ["export_log", "log_export_router"]

PAGE = 1000
CHECKPOINT_PAGE = 500


def log_export_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/audit/key-changes")
    def key_changes(user: CurrentUser) -> dict[str, Any]:
        _require_auditor(user)
        with node.db.session(readonly=True) as session:
            peers = [p.party_id for p in list_peers(session)]
            changes = (
                *key_change_evidence(session, node.party),
                *peer_key_change_evidence(session, peers),
            )
        return {"party": node.party, "key_changes": [c.to_dict() for c in changes]}

    return router


def export_log(client: LocalClient) -> bytes:
    """The node's whole log as `crypto.auditlog.LogExport` bytes."""
    changes = client.audit_get("/audit/key-changes")
    notes: list[str] = []
    since = 0
    while True:
        page = client.audit_get("/audit/checkpoints", since=since, limit=CHECKPOINT_PAGE)
        notes.extend(str(c["note"]) for c in page)
        if len(page) < CHECKPOINT_PAGE:
            break
        since = int(page[-1]["size"]) + 1
    leaves: list[bytes] = []
    while True:
        page = client.audit_get("/audit/leaves", start=len(leaves), limit=PAGE)
        leaves.extend(_leaf(row) for row in page)
        if len(page) < PAGE:
            break
    return LogExport(
        party=str(changes["party"]),
        leaves=tuple(leaves),
        checkpoints=tuple(notes),
        key_changes=tuple(KeyChange.from_dict(k) for k in changes["key_changes"]),
    ).to_bytes()


def _leaf(row: Any) -> bytes:
    import base64

    return base64.b64decode(row["leaf"], validate=True)
