"""Rate limits per peer and per user (gateway/_ratelimit.py), on an injected clock.

A flood from one peer or one user empties that caller's bucket only: it gets 429 with
`Retry-After` while another peer or user is still served. Counts and status codes are
asserted, never timings: the clock is a variable the test moves.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accord.crypto import KdfCost
from accord.crypto.tls import TlsIdentity
from accord.gateway.admin.home import add_user, init_node
from accord.gateway.app import FACE_KEY, create_app
from accord.gateway.node.config import Home, RateLimitConfig
from accord.gateway.node.ratelimit import PeerRateLimit, RateLimiter, TokenBuckets
from accord.gateway.serve import load_node

CHEAP = KdfCost(opslimit=1, memlimit=8192)
PASS = "пароль узла".encode()
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    clock = Monotonic()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    clock.now += 0.5  # one token back
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 100  # refilled, but never beyond the burst
    assert [buckets.take("a") for _ in range(4)].count(0.0) == 3


def test_buckets_are_per_key_and_bounded_in_number() -> None:
    clock = Monotonic()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock, max_keys=2)
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    assert buckets.take("b") == 0.0  # another key is not affected by a's flood
    assert buckets.take("c") == 0.0  # a third key: the least recently used ("a") goes
    assert len(buckets._buckets) == 2


@pytest.mark.parametrize("rate,burst", [(0, 1), (1, 0), (-1, 5)])
def test_rate_limit_config_refuses_non_positive_values(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimitConfig(peer_rate=rate, peer_burst=burst)


def test_rate_limits_round_trip_through_config_toml(tmp_path: Path) -> None:
    from accord.gateway.node.config import NodeConfig

    init_node(tmp_path / "a", party="МВД-РБ", name="Узел", listen="127.0.0.1:9443",
              passphrase=PASS, now=T0, kdf_cost=CHEAP)  # fmt: skip
    config = load_node(tmp_path / "a", PASS)
    try:
        changed = replace(config.config, rate_limits=RateLimitConfig(user_rate=2.5, user_burst=7))
        assert NodeConfig.from_toml(changed.to_toml()).rate_limits == changed.rate_limits
    finally:
        config.close()


# --- The local face: per user ----------------------------------------------------------------


def test_attack_user_flood_gets_429_while_another_user_is_served(tmp_path: Path) -> None:
    init_node(tmp_path / "a", party="МВД-РБ", name="Узел", listen="127.0.0.1:9443",
              passphrase=PASS, now=T0, kdf_cost=CHEAP)  # fmt: skip
    flooder = add_user(Home(tmp_path / "a"), "Флудер", role="operator", now=T0).token
    other = add_user(Home(tmp_path / "a"), "Оператор", role="operator", now=T0).token
    node = load_node(tmp_path / "a", PASS)
    try:
        node.config = replace(node.config, rate_limits=RateLimitConfig(user_rate=1, user_burst=5))
        clock = Monotonic()
        client = TestClient(create_app(node, monotonic=clock))
        flood = [
            client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {flooder}"})
            for _ in range(20)
        ]
        codes = [r.status_code for r in flood]
        assert codes.count(200) == 5 and codes.count(429) == 15
        refused = flood[-1]
        assert refused.headers["Retry-After"] == "1"
        assert "user_rate" in refused.json()["detail"]  # a local user is told what to do
        served = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {other}"})
        assert served.status_code == 200
        clock.now += 1  # one token back for the flooder
        again = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {flooder}"})
        assert again.status_code == 200
    finally:
        node.close()


# --- The peer face: per pinned certificate ----------------------------------------------------


async def _call(app: Any, certificate: bytes | None, face: str = "peer") -> tuple[int, dict]:
    scope: dict[str, Any] = {"type": "http", "path": "/peer/v1/messages", FACE_KEY: face,
                             "headers": [], "method": "POST"}  # fmt: skip
    if certificate is not None:
        scope["extensions"] = {"tls": {"client_cert_chain": [certificate.decode()]}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start.get("headers", [])}


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_attack_peer_flood_gets_uniform_429_while_another_peer_is_served() -> None:
    b = TlsIdentity.generate("Росгвардия", hosts=["127.0.0.1"]).certificate_pem
    c = TlsIdentity.generate("третья", hosts=["127.0.0.1"]).certificate_pem
    clock = Monotonic()
    limiter = RateLimiter(RateLimitConfig(peer_rate=0.5, peer_burst=4), clock=clock)
    app = PeerRateLimit(_ok, limiter, FACE_KEY)

    async def flood() -> None:
        answers = [await _call(app, b) for _ in range(12)]
        codes = [status for status, _ in answers]
        assert codes.count(200) == 4 and codes.count(429) == 8
        # Uniform towards a peer: the same Retry-After (one token's refill) whatever the
        # state of its bucket.
        assert {h["retry-after"] for s, h in answers if s == 429} == {"2"}
        assert (await _call(app, c))[0] == 200
        # The local face is not the peer middleware's to limit.
        assert (await _call(app, b, face="local"))[0] == 200
        clock.now += 2
        assert (await _call(app, b))[0] == 200

    asyncio.run(flood())
