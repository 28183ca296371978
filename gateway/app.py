"""`create_app(node)`: the node's one FastAPI application, with two faces.

- The peer API (`/peer/v1/...`) answers only on the mutual-TLS listener.
- The local API (`/api/v1/...`, OpenAPI at `/docs`) answers only on the users' listener.
Each uvicorn server wraps the app with its face, so a route of one face is never reachable
through the other's port; a request for the wrong face gets the same 404 as a missing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from accord.gateway.api.local.audit import local_audit_router
from accord.gateway.api.local.log_export import log_export_router
from accord.gateway.api.local.messages import local_router
from accord.gateway.audit.witness import peer_audit_router
from accord.gateway.audit.witness_check import peer_witnessed_router
from accord.gateway.consent.control import consent_router
from accord.gateway.consent.forward import forward_peer_router, forward_router
from accord.gateway.keys.upkeep import peer_keys_router
from accord.gateway.messages.receive import peer_router
from accord.gateway.node.ratelimit import PeerRateLimit, RateLimiter
from accord.gateway.node.runtime import Node

__all__ = ["FACE_KEY", "create_app", "with_face"]

FACE_KEY = "accord.face"
Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]
]


def create_app(node: Node, *, monotonic: Callable[[], float] | None = None) -> FastAPI:
    app = FastAPI(
        title=f"Accord node {node.party}",
        summary="Secure document exchange gateway: the local API of one Party's node.",
        version="1",
        # FastAPI's native OpenTelemetry looks up the global providers on every request
        # (3% of a busy node's CPU); a node configures none, and logs its own events.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.node = node
    # Per-peer and per-user rate limits (`_ratelimit`); `monotonic` is the tests' clock.
    limiter = RateLimiter(node.config.rate_limits, **({"clock": monotonic} if monotonic else {}))
    app.state.rate_limiter = limiter
    app.include_router(local_router(node))
    app.include_router(peer_router(node))
    app.include_router(consent_router(node))
    app.include_router(forward_router(node))
    app.include_router(forward_peer_router(node))
    app.include_router(local_audit_router(node))
    app.include_router(peer_audit_router(node))
    app.include_router(peer_keys_router(node))
    app.include_router(peer_witnessed_router(node))
    app.include_router(log_export_router(node))

    app.add_middleware(PeerRateLimit, limiter=limiter, face_key=FACE_KEY)
    app.add_middleware(_Faces)  # added last, so it runs first
    return app


class _Faces:
    """Refuse a route of the other face with the same 404 as a missing one.

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` (`@app.middleware`) runs
    every request through a task group and memory streams, which took a fifth of the
    node's CPU under load."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            face = scope.get(FACE_KEY, "local")
            path = scope.get("path", "")
            if (path.startswith("/peer/") and face != "peer") or (
                face == "peer" and not path.startswith("/peer/")
            ):
                await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def with_face(app: ASGIApp, face: str) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            scope[FACE_KEY] = face
        await app(scope, receive, send)

    return wrapped
