"""Flow control between the local API and the delivery worker (gateway/_flow.py)."""

from __future__ import annotations

import asyncio

from accord.gateway.node.flow import Backlog


async def _spin() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_send_proceeds_at_once_below_the_limit() -> None:
    async def scenario() -> bool:
        backlog = Backlog(limit=2)
        backlog.accepted()
        waiter = asyncio.create_task(backlog.room())
        await _spin()
        return waiter.done()

    assert asyncio.run(scenario())


def test_send_waits_while_the_worker_is_behind_and_goes_on_once_it_catches_up() -> None:
    async def scenario() -> tuple[bool, bool]:
        backlog = Backlog(limit=2, max_wait=3600)
        backlog.accepted(2)
        waiter = asyncio.create_task(backlog.room())
        await _spin()
        waiting = not waiter.done()
        backlog.attempted(1)
        await _spin()
        return waiting, waiter.done()

    assert asyncio.run(scenario()) == (True, True)


def test_attack_stalled_delivery_never_blocks_sending_for_good() -> None:
    """A peer that never answers must not take the local API down with it: the wait is
    bounded, and a send then proceeds (its message is queued like any other)."""

    async def scenario() -> int:
        backlog = Backlog(limit=1, max_wait=0)
        backlog.accepted(5)
        await backlog.room()
        return backlog.count

    assert asyncio.run(scenario()) == 5


def test_count_never_goes_below_zero() -> None:
    """Messages queued before the process started are settled without having been
    counted; they must not buy room for later sends."""
    backlog = Backlog(limit=1)
    backlog.attempted(10)
    backlog.accepted()
    assert backlog.count == 1
