"""Rate limits: a token bucket per authenticated peer (peer API) and per user (local API).

Invariants:
- A bucket is keyed by who the request authenticated as: the peer's pinned client
  certificate on the peer face (`PeerRateLimit`, a plain ASGI middleware, so a flooding
  peer is answered before any route, body or database work), the token's user on the local
  face (`RateLimiter.check_user`, called by the local API's authentication dependency).
  One peer or user flooding the node empties its own bucket only; the others are served.
- Over its limit a request gets 429 with `Retry-After`. Towards a peer the answer is
  uniform (STYLE "Errors"): the same body as any refusal and a fixed `Retry-After` (the
  time one token takes to come back), never how empty its bucket is. A local user is told
  how long to wait and which setting sets the limit.
- Time comes from an injected monotonic clock, so tests never sleep; memory is bounded:
  at most `max_keys` buckets are kept, the least recently used forgotten first (a
  forgotten bucket is a full one, which only ever errs towards serving).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from accord.gateway.node.config import RateLimitConfig
from accord.gateway.node.tls import peer_certificate_der

__all__ = ["PeerRateLimit", "RateLimiter", "TokenBuckets"]

Clock = Callable[[], float]


class TokenBuckets:
    """Token buckets of `burst` tokens refilled at `rate` tokens a second, one per key."""

    def __init__(
        self, rate: float, burst: int, *, clock: Clock = time.monotonic, max_keys: int = 10_000
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a rate limit needs a positive rate, a burst of at least 1")
        self.rate, self.burst, self._clock, self._max_keys = rate, burst, clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # Taken from the event loop and from the thread pool (sync routes' dependencies).
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 if it had one, else the seconds until it will."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - then) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        return wait

    @property
    def refill_seconds(self) -> float:
        """How long one token takes to come back."""
        return 1.0 / self.rate


class RateLimiter:
    """The node's two sets of buckets, built from its configuration."""

    def __init__(self, config: RateLimitConfig, *, clock: Clock = time.monotonic) -> None:
        self.peers = TokenBuckets(config.peer_rate, config.peer_burst, clock=clock)
        self.users = TokenBuckets(config.user_rate, config.user_burst, clock=clock)

    def check_user(self, user: str) -> tuple[int, str] | None:
        """None if `user` may go on, else (Retry-After seconds, what to tell them)."""
        wait = self.users.take(user)
        if not wait:
            return None
        seconds = max(1, math.ceil(wait))
        return seconds, (
            f"too many requests from {user}: retry in {seconds} s "
            f"(the node allows {self.users.rate:g} a second, bursts of {self.users.burst}; "
            "its admin sets [rate_limits] user_rate and user_burst in config.toml)"
        )


_REFUSED = {"error": "refused"}


class PeerRateLimit:
    """ASGI middleware: the peer face's requests, limited per pinned client certificate."""

    def __init__(self, app: Any, limiter: RateLimiter, face_key: str) -> None:
        self.app, self.limiter, self.face_key = app, limiter, face_key
        self._retry_after = str(max(1, math.ceil(limiter.peers.refill_seconds)))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get(self.face_key) == "peer":
            der = peer_certificate_der(scope)
            # No certificate: the route refuses it anyway; key it all the same.
            key = hashlib.sha256(der).hexdigest() if der is not None else "-"
            if self.limiter.peers.take(key):
                response = JSONResponse(
                    _REFUSED, status_code=429, headers={"Retry-After": self._retry_after}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
