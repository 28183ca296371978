"""The unsigned tail of the audit log stays short (issue 12, DESIGN 7).

Leaves past the last signed checkpoint are the ones a thief of the database could delete
without any signature, and so any peer, contradicting it. With the default schedule
(`AuditConfig()`), a node under a steady send keeps that tail bounded: counted in leaves
after each round of the scheduler, on the injected clock, never timed.
"""

from __future__ import annotations

import asyncio

from accord.gateway.audit import log as _audit
from accord.gateway.audit.log import AuditScheduler, EventKind
from accord.gateway.node.config import AuditConfig
from accord.gateway.node.runtime import Node
from accord.storage import latest_checkpoint, tree_size
from tests.gateway.test_audit import PARTY_A, PARTY_B, InProcess, pair  # noqa: F401
from tests.gateway.test_audit import Pair as _Pair

# A steady send: each second one message leaves and its receipt comes back.
EVENTS_PER_SECOND = 2
SECONDS = 120


def _tail(node: Node) -> int:
    with node.db.session(readonly=True) as session:
        latest = latest_checkpoint(session)
        return tree_size(session) - (0 if latest is None else latest.size)


def _second_of_sending(node: Node, second: int) -> None:
    with node.db.session() as session:
        _audit.record_all(
            session,
            [
                _audit.event(kind, node.party, node.clock(), message_id=f"сообщение-{second}")
                for kind in (EventKind.MESSAGE_SENT, EventKind.RECEIPT_STORED)
            ][:EVENTS_PER_SECOND],
        )


def test_unsigned_tail_stays_short_under_a_steady_send(pair: _Pair) -> None:  # noqa: F811
    config = AuditConfig()  # the defaults a node runs with
    pair.a.config = pair.a.config.with_changes(audit=config)
    scheduler = AuditScheduler(pair.a, InProcess(pair.b, PARTY_A), lambda: [PARTY_B])
    bound = min(config.checkpoint_burst, EVENTS_PER_SECOND * int(config.checkpoint_interval + 1))
    tails = []
    for second in range(SECONDS):
        _second_of_sending(pair.a, second)
        pair.clock.advance(config.poll_interval)
        asyncio.run(scheduler.step())
        tails.append(_tail(pair.a))
    assert max(tails) <= bound, f"the unsigned tail reached {max(tails)} leaves"
    # And the checkpoints were cosigned as they came: the witnessed tail is as short.
    with pair.a.db.session(readonly=True) as session:
        latest = latest_checkpoint(session)
        assert latest is not None
        assert tree_size(session) - latest.size <= bound
    assert _audit.verify_log(pair.a)["ok"]
