"""Mutual TLS end to end: a real uvicorn server, real sockets, a real httpx client.

The server pins client A, and an expired certificate to show that dates are enforced even
for a pinned one. Every refusal must happen in the TLS handshake, before any request reaches
the application, so each negative test also checks that the app saw nothing.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request

from accord.crypto.tls import (
    PinEvidence,
    TlsError,
    TlsIdentity,
    certificate_fingerprint,
    check_pin,
    client_context,
    server_context,
)
from accord.gateway.node.tls import peer_certificate_der
from tests.gateway._servers import running_server

HOSTS = ["localhost", "127.0.0.1"]
TLS13_SUITES = {0x1301, 0x1302, 0x1303, 0x1304, 0x1305}


def peer_evidence(request: Request) -> PinEvidence:
    """What a peer-API dependency does: the handshake already checked the pin, and the
    application checks it again against the registry before trusting the peer's name."""
    der = peer_certificate_der(request.scope)
    if der is None:
        raise HTTPException(status_code=403)
    try:
        return check_pin(der, request.app.state.pins)
    except TlsError as e:
        raise HTTPException(status_code=403) from e


@dataclass
class Node:
    """A test server: its app, what it pins, and which requests reached the app."""

    identity: TlsIdentity
    pinned: list[TlsIdentity]
    seen: list[str | None] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()
        app.state.pins = frozenset(peer.fingerprint for peer in self.pinned)

        @app.get("/whoami")
        def whoami(request: Request) -> dict[str, Any]:
            der = peer_certificate_der(request.scope)
            self.seen.append(certificate_fingerprint(der) if der else None)
            tls = dict(request.scope["extensions"]["tls"])
            tls["client_cert_chain"] = list(tls["client_cert_chain"])
            return {"fingerprint": self.seen[-1], "tls": tls}

        @app.get("/peer")
        def who(evidence: Annotated[PinEvidence, Depends(peer_evidence)]) -> dict[str, str]:
            self.seen.append(evidence.fingerprint)
            return {"party": evidence.party_id, "fingerprint": evidence.fingerprint}

        return app


def make(party: str, **kwargs: Any) -> TlsIdentity:
    return TlsIdentity.generate(party, hosts=HOSTS, **kwargs)


@pytest.fixture(scope="module")
def ids() -> dict[str, TlsIdentity]:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    return {
        "server": make("МВД-РБ"),
        "a": make("Росгвардия"),
        "c": make("Росгвардия"),  # same name as A, different key: an impostor
        "other_server": make("МВД-РБ"),
        "expired": make("Росгвардия", now=past, valid_days=1),
    }


@pytest.fixture(scope="module")
def served(ids: dict[str, TlsIdentity]) -> Iterator[tuple[Node, str]]:
    node = Node(ids["server"], pinned=[ids["a"], ids["expired"]])
    context = server_context(node.identity, [p.certificate_pem for p in node.pinned])
    with running_server(
        node.app(), context, server_cert_pem=node.identity.certificate_pem
    ) as base_url:
        yield node, base_url


@pytest.fixture
def node(served: tuple[Node, str]) -> Node:
    served[0].seen.clear()
    return served[0]


@pytest.fixture
def base_url(served: tuple[Node, str]) -> str:
    return served[1]


def client(context: ssl.SSLContext, base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, verify=context, timeout=5.0)


def test_pinned_client_reaches_the_app_and_is_identified(
    ids: dict[str, TlsIdentity], node: Node, base_url: str
) -> None:
    a = ids["a"]
    with client(client_context(a, node.identity.certificate_pem), base_url) as http:
        response = http.get("/whoami")
        peer = http.get("/peer")

    assert response.status_code == 200
    body = response.json()
    assert body["fingerprint"] == a.fingerprint
    tls = body["tls"]
    assert tls["client_cert_chain"] == [a.certificate_pem.decode()]
    assert tls["client_cert_name"] == "O=Росгвардия,CN=Росгвардия"
    assert tls["client_cert_error"] is None
    assert tls["server_cert"] == node.identity.certificate_pem.decode()
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in TLS13_SUITES
    assert peer.status_code == 200
    assert peer.json() == {"party": "Росгвардия", "fingerprint": a.fingerprint}
    assert node.seen == [a.fingerprint, a.fingerprint]


def test_every_request_on_a_kept_alive_connection_carries_the_peer(
    ids: dict[str, TlsIdentity], node: Node, base_url: str
) -> None:
    a = ids["a"]
    with client(client_context(a, node.identity.certificate_pem), base_url) as http:
        fingerprints = [http.get("/whoami").json()["fingerprint"] for _ in range(3)]
    assert fingerprints == [a.fingerprint] * 3


def test_unknown_client_certificate_refused(
    ids: dict[str, TlsIdentity], node: Node, base_url: str
) -> None:
    impostor = ids["c"]
    with (
        client(client_context(impostor, node.identity.certificate_pem), base_url) as http,
        pytest.raises(httpx.TransportError),
    ):
        http.get("/whoami")
    assert node.seen == []


def test_client_without_certificate_refused(node: Node, base_url: str) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.minimum_version = ssl.TLSVersion.TLSv1_3
    anonymous.load_verify_locations(cadata=node.identity.certificate_pem.decode())
    with client(anonymous, base_url) as http, pytest.raises(httpx.TransportError):
        http.get("/whoami")
    assert node.seen == []


def test_tls12_client_refused(ids: dict[str, TlsIdentity], node: Node, base_url: str) -> None:
    downgraded = client_context(ids["a"], node.identity.certificate_pem)
    downgraded.minimum_version = ssl.TLSVersion.TLSv1_2
    downgraded.maximum_version = ssl.TLSVersion.TLSv1_2
    with client(downgraded, base_url) as http, pytest.raises(httpx.ConnectError):
        http.get("/whoami")
    assert node.seen == []


def test_server_with_unpinned_certificate_refused_by_client(
    ids: dict[str, TlsIdentity], node: Node, base_url: str
) -> None:
    # The client pins another certificate of a node with the same name: the real server's
    # certificate must not verify, whatever its subject says.
    context = client_context(ids["a"], ids["other_server"].certificate_pem)
    with (
        client(context, base_url) as http,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        http.get("/whoami")
    assert node.seen == []


def test_expired_certificate_refused(
    ids: dict[str, TlsIdentity], node: Node, base_url: str
) -> None:
    # The expired certificate is pinned: it is refused for its dates, not for the pin.
    expired = ids["expired"]
    assert expired.expires_within(0)
    with (
        client(client_context(expired, node.identity.certificate_pem), base_url) as http,
        pytest.raises(httpx.TransportError),
    ):
        http.get("/whoami")
    assert node.seen == []


def test_expired_server_certificate_refused_by_client(ids: dict[str, TlsIdentity]) -> None:
    expired = ids["expired"]
    stale = Node(expired, pinned=[ids["a"]])
    context = server_context(expired, [ids["a"].certificate_pem])
    with (
        running_server(stale.app(), context) as base_url,
        client(client_context(ids["a"], expired.certificate_pem), base_url) as http,
        pytest.raises(httpx.ConnectError, match="certificate has expired"),
    ):
        http.get("/whoami")
    assert stale.seen == []


def test_scope_without_tls_extension_has_no_peer() -> None:
    assert peer_certificate_der({"type": "http"}) is None
    assert peer_certificate_der({"type": "http", "extensions": {}}) is None
    assert peer_certificate_der({"extensions": {"tls": {"client_cert_chain": []}}}) is None


def test_certificate_that_failed_verification_is_no_peer(ids: dict[str, TlsIdentity]) -> None:
    # A server that lets unverified certificates through reports the failure; such a
    # certificate must not identify anyone.
    tls: dict[str, Any] = {
        "client_cert_chain": [ids["c"].certificate_pem.decode()],
        "client_cert_error": "unknown CA",
    }
    assert peer_certificate_der({"extensions": {"tls": tls}}) is None
    tls["client_cert_error"] = None
    assert peer_certificate_der({"extensions": {"tls": tls}}) == ids["c"].certificate_der
