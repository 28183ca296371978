"""Key rotation and revocation between two real nodes (issue 5; DESIGN 8).

Node A (МВД-РБ) and node B (Росгвардия) run as real `accord serve` processes. Their admins
run `accord keys rotate` and `accord keys revoke` as real CLI processes on the homes while
the nodes run and messages are in flight; the rotation statements travel over the peer
API (mutual TLS, pinned) and the peers update their registries by themselves.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest

from accord.crypto import Envelope, SigningKey
from accord.crypto.rotation import ROTATION_TYPE, RotatedKind, RotationStatement
from accord.crypto.tls import TlsIdentity, certificate_fingerprint, client_context
from accord.storage import KeyKind, KeyStatus, get_key, get_message, get_peer, pending_announcements
from accord.storage import list_keys as stored_keys
from tests.integration._nodes import NODE_PASSPHRASE, Cluster, NodeProcess, _now, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nodes(cluster_factory: Callable[[], Cluster]) -> SimpleNamespace:
    cluster = cluster_factory()
    a, b = cluster.add("МВД-РБ", "Росгвардия")
    a.add_user("оператор", role="operator", clearance="CONFIDENTIAL")
    b.add_user("оператор Б", role="operator", clearance="CONFIDENTIAL")
    b.add_user("исполнитель", role="operator", clearance="CONFIDENTIAL")
    cluster.connect()
    cluster.start()
    return SimpleNamespace(a=a, b=b, cluster=cluster)


def accord(*args: str) -> dict[str, object]:
    """Run the real CLI as an admin would, with the node's passphrase; its --json output."""
    env = dict(os.environ, ACCORD_PASSPHRASE=NODE_PASSPHRASE)
    done = subprocess.run(
        [sys.executable, "-c", "from accord.gateway.cli import main; main()", *args, "--json"],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    document: dict[str, object] = json.loads(done.stdout)
    return document


def notices(sender: NodeProcess, user: str, to: NodeProcess, count: int, tag: str) -> list[str]:
    ids = []
    for i in range(count):
        response = sender.send(user, to=to, body=f"Уведомление {tag} № {i}", purpose="ротация")
        assert response.status_code == 201, response.text
        ids.append(response.json()["message_id"])
    return ids


def seal_of(node: NodeProcess, message_id: str) -> set[str]:
    """The key ids that signed a message, as stored at `node`."""
    with node.database() as db, db.session(readonly=True) as session:
        envelope = Envelope.from_bytes(get_message(session, message_id).envelope)
    return {s.keyid for s in envelope.signatures}


def key_status_at(node: NodeProcess, key_id: str) -> KeyStatus | None:
    with node.database() as db, db.session(readonly=True) as session:
        try:
            return get_key(session, key_id).status
        except Exception:
            return None


def all_announced(node: NodeProcess) -> bool:
    with node.database() as db, db.session(readonly=True) as session:
        return not pending_announcements(session)


def test_rotation_while_messages_are_in_flight_loses_and_refuses_none(
    nodes: SimpleNamespace,
) -> None:
    a, b = nodes.a, nodes.b
    before = notices(a, "оператор", b, 5, "до ротации")
    # A's admin rotates the seal, B's the encryption key, while those are being delivered.
    seal = accord("keys", "rotate", "--home", str(a.home_dir), "--key", "seal")
    during = notices(a, "оператор", b, 5, "во время ротации")
    encryption = accord("keys", "rotate", "--home", str(b.home_dir), "--key", "encryption")
    after = notices(a, "оператор", b, 5, "после ротации")
    back = notices(b, "оператор Б", a, 3, "ответ")
    for message_id in before + during + after:
        a.wait_for_status(message_id, "delivered")
    for message_id in back:
        b.wait_for_status(message_id, "delivered")
    assert set(before + during + after) <= set(b.box_ids("inbox"))
    # Each peer learnt the other's new key over the peer API, by itself.
    wait_until(lambda: all_announced(a) and all_announced(b), what="announcements", timeout=30)
    assert key_status_at(b, str(seal["new_key_id"])) is KeyStatus.ACTIVE
    assert key_status_at(b, str(seal["old_key_id"])) is KeyStatus.OVERLAP
    assert key_status_at(a, str(encryption["new_key_id"])) is KeyStatus.ACTIVE
    # Every message opens at B: sealed to B's old encryption key or to its new one.
    with b.client("исполнитель") as client:
        for message_id in before + during + after:
            read = client.get(f"/api/v1/messages/{message_id}")
            assert read.status_code == 200, read.text
    # Once the statement reached B, A seals with its new seal, and B accepts it.
    late = notices(a, "оператор", b, 2, "новой печатью")
    for message_id in late:
        a.wait_for_status(message_id, "delivered")
    assert str(seal["new_key_id"]) in seal_of(b, late[-1])
    assert str(seal["old_key_id"]) in seal_of(b, before[0])
    # Nothing expires soon: the health endpoint has no key warnings.
    with a.client() as client:
        health = client.get("/api/v1/health").json()
    assert health["warnings"] == []


def presented_by_peer_api(node: NodeProcess, peer: NodeProcess, pins: bytes) -> str:
    """The fingerprint of the certificate `node`'s peer API presents, in a new handshake,
    to `peer` (which trusts `pins`, a PEM bundle of the node's certificates)."""
    identity = TlsIdentity.load(peer.home.tls_dir, NODE_PASSPHRASE.encode())
    context = client_context(identity, pins)
    address = urlsplit(node.peer_url)
    assert address.hostname is not None and address.port is not None
    with (
        socket.create_connection((address.hostname, address.port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return certificate_fingerprint(der)


def presented_by_local_api(node: NodeProcess, ca: ssl.SSLContext) -> str | None:
    """The fingerprint of the certificate `node`'s local API presents to a local client
    trusting `ca`; None while that client refuses it."""
    address = urlsplit(node.url)
    assert address.hostname is not None and address.port is not None
    try:
        with (
            socket.create_connection((address.hostname, address.port), timeout=10) as raw,
            ca.wrap_socket(raw, server_hostname=address.hostname) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLError:
        return None
    return certificate_fingerprint(der) if der else None


def test_tls_rotation_is_adopted_by_the_running_node_without_a_restart(
    nodes: SimpleNamespace,
) -> None:
    """Issue 5, rotation without downtime: A's admin rotates A's TLS key while both nodes
    run. B pins A's new certificate from the signed statement; A, never restarted, then
    presents the new certificate on its peer API (new handshakes) and its local API, and
    messages flow both ways. Local clients learn the new certificate from A's home
    (`tls/tls.crt`, ACCORD_CA), as docs/admin-guide.md says."""
    a, b = nodes.a, nodes.b
    assert a._process is not None
    pid = a._process.pid
    old_pem = a.certificate_pem
    old = certificate_fingerprint(old_pem)
    assert presented_by_peer_api(a, b, old_pem) == old
    rotated = accord("keys", "rotate", "--home", str(a.home_dir), "--key", "tls")
    new = str(rotated["new_key_id"])
    assert rotated["old_key_id"] == old
    assert new != old
    new_pem = (a.home.tls_dir / "tls.crt").read_bytes()
    assert certificate_fingerprint(new_pem) == new
    wait_until(lambda: all_announced(a), what="A's TLS rotation to reach B", timeout=30)
    with b.database() as db, db.session(readonly=True) as session:
        assert get_peer(session, a.party).tls_cert_sha256 == new
    # B trusts both of A's certificates in the overlap window; A's peer API, still the
    # same process, answers new handshakes with the new one.
    both = old_pem + new_pem
    wait_until(
        lambda: presented_by_peer_api(a, b, both) == new,
        what="A's peer API to present its new certificate",
        timeout=30,
        diagnose=a.log_tail,
    )
    # Local clients are given the new tls.crt of A's home; A's local API presents it.
    a._ssl = ssl.create_default_context(cafile=str(a.home.tls_dir / "tls.crt"))
    wait_until(
        lambda: presented_by_local_api(a, a._ssl) == new,
        what="A's local API to present its new certificate",
        timeout=30,
        diagnose=a.log_tail,
    )
    # Both directions deliver: A's client certificate is now the new one, which B pinned.
    there = notices(a, "оператор", b, 2, "новый сертификат без перезапуска")
    back = notices(b, "оператор Б", a, 2, "новый сертификат без перезапуска")
    for message_id in there:
        a.wait_for_status(message_id, "delivered")
    for message_id in back:
        b.wait_for_status(message_id, "delivered")
    assert set(there) <= set(b.box_ids("inbox"))
    assert set(back) <= set(a.box_ids("inbox"))
    # No restart happened, and only the new certificate is what A's peer API presents.
    assert a.running and a._process.pid == pid
    assert presented_by_peer_api(a, b, new_pem) == new
    assert "peer API now presents TLS certificate " + new[:16] in a.log_tail(400)


def test_revocation_reaches_the_peer_and_the_revoked_key_is_refused(
    nodes: SimpleNamespace,
) -> None:
    a, b = nodes.a, nodes.b
    with a.database() as db, db.session(readonly=True) as session:
        old = [
            k.key_id
            for k in stored_keys(session, owner=a.party, kind=KeyKind.SEAL)
            if k.status is KeyStatus.OVERLAP
        ]
    assert old, "the first test rotated A's seal"
    accord("keys", "revoke", "--home", str(a.home_dir), old[0], "--reason", "ключ утерян")
    wait_until(
        lambda: key_status_at(b, old[0]) is KeyStatus.REVOKED,
        what="A's revocation to reach B",
        timeout=30,
    )
    with b.database() as db, db.session(readonly=True) as session:
        assert get_key(session, old[0]).reason == "ключ утерян"
    # Messages A sends now still arrive (sealed with the current seal).
    for message_id in notices(a, "оператор", b, 1, "после отзыва"):
        a.wait_for_status(message_id, "delivered")


def _peer_client(node: NodeProcess, peer: NodeProcess) -> httpx.Client:
    identity = TlsIdentity.load(node.home.tls_dir, NODE_PASSPHRASE.encode())
    context = client_context(identity, peer.certificate_pem)
    return httpx.Client(base_url=peer.peer_url, verify=context, timeout=30)


def test_attack_forged_rotation_statement_over_the_peer_api_is_refused_uniformly(
    nodes: SimpleNamespace,
) -> None:
    a, b = nodes.a, nodes.b
    with b.database() as db, db.session(readonly=True) as session:
        (current,) = [
            k.key_id
            for k in stored_keys(session, owner=a.party, kind=KeyKind.SEAL)
            if k.status is KeyStatus.ACTIVE
        ]
        trusted_before = {k.key_id: k.status for k in stored_keys(session, owner=a.party)}
    mallory, mallory_next = SigningKey.generate(), SigningKey.generate()
    now = _now()
    statement = RotationStatement(
        a.party, RotatedKind.SEAL, current, mallory_next.verify_key().to_dict(), now,
        now, now,
    )  # fmt: skip
    from accord.crypto.envelope import sign_envelope

    forged = sign_envelope(ROTATION_TYPE, statement.to_payload(), [mallory, mallory_next])
    with _peer_client(a, b) as client:
        refused = client.post("/peer/v1/keys", content=forged.to_bytes())
        garbage = client.post("/peer/v1/keys", content=b"{not json")
    assert (refused.status_code, refused.json()) == (403, {"error": "refused"})
    assert (garbage.status_code, garbage.json()) == (403, {"error": "refused"})
    with b.database() as db, db.session(readonly=True) as session:
        assert {k.key_id: k.status for k in stored_keys(session, owner=a.party)} == trusted_before
