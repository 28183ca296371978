"""Serving the peer API over mutual TLS with uvicorn, and exposing the verified peer
certificate to the application (DESIGN.md §9, docs/adr/0004-mutual-tls.md).

uvicorn 0.54 verifies client certificates but does not put them in the ASGI scope (the TLS
extension is still open upstream: Kludex/uvicorn PRs 3132 and 3133). `TlsHttpProtocol` is
a small subclass of uvicorn's httptools protocol (its C parser: httptools is a dependency,
as in uvicorn[standard]) that adds the ASGI TLS extension,
https://asgi.readthedocs.io/en/latest/specs/tls.html, to every HTTP request scope. Drop it
once uvicorn ships the extension; `peer_certificate_der` reads the standard shape and keeps
working unchanged.

Invariants:
- The extension is computed once per connection, from the `ssl` object of a handshake that
  has already completed (asyncio calls `connection_made` only after it), and every request
  gets its own copy, so an application that edits its scope cannot affect the next request.
- The extension is present only on TLS connections, as the specification requires; a plain
  connection yields `peer_certificate_der(scope) is None`.
- Servers built by `build_server` take our own `ssl.SSLContext` (through uvicorn's
  `ssl_context_factory`), serve HTTP/1.1 through `TlsHttpProtocol` only, and refuse WebSocket
  upgrades, which would reach the application without the extension.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from accord.crypto.tls import TlsError, certificate_subject

if TYPE_CHECKING:
    # uvicorn keeps its ASGI types in a private module; they are used for annotations only.
    from uvicorn._types import (
        ASGI3Application,
        ASGIApplication,
        ASGIReceiveCallable,
        ASGISendCallable,
        Scope,
    )

__all__ = ["MtlsConfig", "TlsHttpProtocol", "build_server", "peer_certificate_der"]

TLS_EXTENSION = "tls"

# The ASGI TLS extension reports versions as the integer on the wire (RFC 8446 §4.2.1).
_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


class MtlsConfig(uvicorn.Config):
    """A uvicorn `Config` that also knows our own certificate, for `server_cert`."""

    def __init__(self, *args: Any, server_cert_pem: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_cert_pem = server_cert_pem


class TlsHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, in C) plus the ASGI TLS extension in every
    HTTP request scope."""

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        # uvicorn calls `self.app` for each request of this connection; wrapping it here is
        # the one hook that needs no copy of uvicorn's request handling.
        ssl_object = transport.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            return
        config = self.config
        server_cert = config.server_cert_pem if isinstance(config, MtlsConfig) else None
        self.app = _with_tls_extension(self.app, _tls_extension(ssl_object, server_cert))

    def shutdown(self) -> None:
        """On server shutdown, drop an idle connection at once.

        uvicorn closes idle connections gracefully; over TLS that sends close_notify and
        waits for the peer's, which a peer's idle pooled client never reads, so a stopping
        node would wait for asyncio's TLS shutdown timeout (30 s). An idle connection
        carries no request, so aborting it loses nothing; requests in flight still finish.
        """
        idle = self.cycle is None or self.cycle.response_complete
        super().shutdown()
        if idle and self.transport is not None:
            self.transport.abort()


def peer_certificate_der(scope: Mapping[str, Any]) -> bytes | None:
    """The verified client certificate (DER) of the connection that carried this request,
    or None when there is none (plain HTTP, no certificate, or a server without the ASGI
    TLS extension). Use it in a FastAPI dependency: `peer_certificate_der(request.scope)`."""
    extensions = scope.get("extensions") or {}
    tls = extensions.get(TLS_EXTENSION)
    if not isinstance(tls, Mapping):
        return None
    # A server configured to let unverified certificates through reports why here; such a
    # certificate proves nothing and must not identify a peer.
    if tls.get("client_cert_error") is not None:
        return None
    chain = list(tls.get("client_cert_chain") or ())
    if not chain or not isinstance(chain[0], str):
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(chain[0])
    except ValueError:
        return None


def build_server(
    app: ASGIApplication,
    context: ssl.SSLContext,
    *,
    host: str,
    port: int,
    server_cert_pem: bytes | None = None,
    log_level: str = "warning",
) -> uvicorn.Server:
    """A uvicorn server for `app` on `host:port` that uses `context` as is.

    uvicorn builds its own context from file names unless `ssl_context_factory` is given;
    ours returns the context from `crypto.tls.server_context`, so pins, TLS 1.3 and the
    in-memory key all survive. Pass our certificate as `server_cert_pem` to have it
    reported as the extension's `server_cert`.
    """
    if context.verify_mode != ssl.CERT_REQUIRED:
        raise TlsError("the peer API needs a context that requires client certificates")
    config = MtlsConfig(
        app,
        host=host,
        port=port,
        http=TlsHttpProtocol,
        ssl_context_factory=lambda _config, _default: context,
        server_cert_pem=server_cert_pem.decode("ascii") if server_cert_pem else None,
        # The extension is added only to HTTP scopes of TlsHttpProtocol; an upgraded WebSocket
        # would reach the application without it, so the peer API does not offer them.
        ws="none",
        # The peer's address is the socket's, never a header a peer could forge.
        proxy_headers=False,
        server_header=False,
        # Leave the process's logging configuration to the caller.
        log_config=None,
        log_level=log_level,
    )
    return uvicorn.Server(config)


def _tls_extension(ssl_object: ssl.SSLObject, server_cert: str | None) -> dict[str, Any]:
    peer_der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    return {
        "server_cert": server_cert,
        # Python's ssl exposes only the peer's leaf; pinned peers send self-signed
        # certificates, so the leaf is the whole chain.
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(peer_der)] if peer_der else [],
        "client_cert_name": _subject(peer_der) if peer_der else None,
        # Our contexts require a verified certificate, so a failure never gets this far.
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": _cipher_suite_id(ssl_object, cipher[0]) if cipher else None,
    }


def _subject(peer_der: bytes) -> str | None:
    try:
        return certificate_subject(peer_der)
    except TlsError:
        return None


def _cipher_suite_id(ssl_object: ssl.SSLObject, name: str) -> int | None:
    # OpenSSL's cipher ids carry the 16-bit IANA code in their low bits (0x0300XXXX).
    for suite in ssl_object.context.get_ciphers():
        if suite.get("name") == name and isinstance(suite.get("id"), int):
            return int(suite["id"]) & 0xFFFF
    return None


def _with_tls_extension(app: ASGI3Application, extension: dict[str, Any]) -> ASGI3Application:
    async def app_with_tls(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] in ("http", "websocket"):
            www = cast(dict[str, Any], scope)
            extensions = dict(www.get("extensions") or {})
            extensions[TLS_EXTENSION] = {
                **extension,
                "client_cert_chain": list(extension["client_cert_chain"]),
            }
            www["extensions"] = extensions
        await app(scope, receive, send)

    return app_with_tls
