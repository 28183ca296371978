"""Flow control between the local API and the delivery worker of one node.

The local API can accept messages faster than one process can deliver them: both share
one event loop and, on a small machine, the same cores. Unchecked, the outbox grows for as
long as the load lasts while deliveries starve (the first measurements showed a backlog
of thousands of accepted messages and receipts arriving in bursts), which is no sustained
rate at all. So a send waits, briefly, while this node has more than `limit` accepted
messages whose first delivery attempt has not been settled yet.

The wait is bounded (`max_wait`): flow control, never a refusal. When a peer is down its
messages are settled as retries, which ends their count here, so sends to other peers (or
to that peer, to be queued) do not stall. Counting is in memory and approximate on
purpose: messages queued before the process started are not counted, and the count never
goes below zero. Nothing here affects what is stored or delivered, only when the local
API answers.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Backlog"]


class Backlog:
    """Accepted, not yet attempted: a counter with an event for "below the limit".
    Use it from the event loop only."""

    def __init__(self, limit: int = 256, max_wait: float = 2.0) -> None:
        self.limit, self.max_wait = limit, max_wait
        self._count = 0
        self._room: asyncio.Event | None = None

    @property
    def count(self) -> int:
        return self._count

    def _event(self) -> asyncio.Event:
        if self._room is None:
            self._room = asyncio.Event()
            if self._count < self.limit:
                self._room.set()
        return self._room

    async def room(self) -> None:
        """Return once the backlog is below the limit, or after `max_wait` seconds."""
        if self._count < self.limit:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event().wait(), self.max_wait)

    def accepted(self, n: int = 1) -> None:
        self._count += n
        if self._count >= self.limit:
            self._event().clear()

    def attempted(self, n: int) -> None:
        """`n` messages had their first delivery attempt settled (whatever the outcome)."""
        self._count = max(0, self._count - n)
        if self._count < self.limit:
            self._event().set()
