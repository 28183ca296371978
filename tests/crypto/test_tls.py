"""TLS identities: generation, encrypted storage, pins, and the contexts in real handshakes."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from accord.crypto.tls import (
    PinEvidence,
    TlsError,
    TlsIdentity,
    certificate_fingerprint,
    certificate_subject,
    check_pin,
    client_context,
    local_server_context,
    reload_identity,
    server_context,
)

NOW = datetime.datetime(2026, 11, 25, 12, 0, 0, tzinfo=datetime.UTC)
PASSPHRASE = "пароль узла — долгий".encode()
HOSTS = ["node-a.example", "127.0.0.1", "::1"]


def identity(party_id: str = "МВД-РБ", **kwargs: object) -> TlsIdentity:
    return TlsIdentity.generate(party_id, hosts=HOSTS, **kwargs)  # type: ignore[arg-type]


# --- Generation and the certificate --------------------------------------------------------


def test_certificate_names_party_hosts_and_both_auth_purposes() -> None:
    node = identity(valid_days=30, now=NOW)
    cert = x509.load_der_x509_certificate(node.certificate_der)

    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "МВД-РБ"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "МВД-РБ"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-a.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # Not a CA: a peer pinning this certificate must not accept others it signs.
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    assert cert.not_valid_before_utc == NOW - datetime.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=30)
    assert node.not_after == NOW + datetime.timedelta(days=30)
    assert node.party_id == "МВД-РБ"


def test_p256_key_type_is_available() -> None:
    node = identity(key_type="ecdsa-p256")
    cert = x509.load_der_x509_certificate(node.certificate_der)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_fingerprint_is_sha256_of_der_whatever_the_encoding() -> None:
    node = identity()
    assert node.fingerprint == hashlib.sha256(node.certificate_der).hexdigest()
    assert certificate_fingerprint(node.certificate_pem) == node.fingerprint
    assert certificate_fingerprint(node.certificate_der) == node.fingerprint
    assert identity().fingerprint != node.fingerprint


def test_repr_does_not_show_key_material() -> None:
    node = identity()
    assert repr(node) == f"TlsIdentity(party_id='МВД-РБ', fingerprint='{node.fingerprint}')"


@pytest.mark.parametrize(
    "hosts",
    [[], ["bad host"], ["ünicode.example"], ["-leading.example"], ["a" * 64 + ".example"]],
)
def test_generate_refuses_bad_hosts(hosts: list[str]) -> None:
    with pytest.raises(TlsError):
        TlsIdentity.generate("party", hosts=hosts)


def test_generate_refuses_one_string_as_hosts() -> None:
    with pytest.raises(TlsError, match="sequence"):
        TlsIdentity.generate("party", hosts="node.example")


@pytest.mark.parametrize("party_id", ["", "x" * 65, "line\nbreak"])
def test_generate_refuses_bad_party_id(party_id: str) -> None:
    with pytest.raises(TlsError, match="party id"):
        TlsIdentity.generate(party_id, hosts=HOSTS)


def test_naive_now_refused() -> None:
    with pytest.raises(TlsError, match="timezone-aware"):
        identity(now=datetime.datetime(2026, 1, 1))
    with pytest.raises(TlsError, match="timezone-aware"):
        identity().expires_within(1, now=datetime.datetime(2026, 1, 1))


def test_expiry_helpers_with_injected_now() -> None:
    node = identity(valid_days=90, now=NOW)
    assert not node.expires_within(30, now=NOW)
    assert not node.expires_within(30, now=NOW + datetime.timedelta(days=59))
    assert node.expires_within(30, now=NOW + datetime.timedelta(days=60))
    assert node.expires_within(0, now=NOW + datetime.timedelta(days=91))


# --- Storage at rest -------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    node = identity()
    node.save(tmp_path / "tls", PASSPHRASE)

    loaded = TlsIdentity.load(tmp_path / "tls", PASSPHRASE)

    assert loaded.fingerprint == node.fingerprint
    assert loaded.certificate_der == node.certificate_der
    assert loaded.party_id == node.party_id
    assert loaded.not_after == node.not_after
    assert (tmp_path / "tls" / "tls.crt").read_bytes() == node.certificate_pem
    # The loaded key is usable: it goes into an ssl context.
    server_context(loaded, [node.certificate_pem])


def test_wrong_passphrase_refused_with_one_clear_error(tmp_path: Path) -> None:
    identity().save(tmp_path, PASSPHRASE)
    with pytest.raises(TlsError, match=r"wrong passphrase for the TLS key in .*tls\.key"):
        TlsIdentity.load(tmp_path, b"not the passphrase")


def test_key_file_is_encrypted_and_private(tmp_path: Path) -> None:
    identity().save(tmp_path, PASSPHRASE)
    key_file = tmp_path / "tls.key"
    data = key_file.read_bytes()

    assert b"-----BEGIN PRIVATE KEY-----" not in data
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The PEM password is derived with Argon2id, not the passphrase itself: PKCS#8's own
    # PBKDF2 (2048 rounds) must never be the only thing standing between a passphrase and
    # the key.
    pem = data[data.index(b"-----BEGIN") :]
    with pytest.raises(ValueError, match="password"):
        serialization.load_pem_private_key(pem, PASSPHRASE)


def test_fingerprint_stable_across_save_and_load(tmp_path: Path) -> None:
    node = identity()
    node.save(tmp_path, PASSPHRASE)
    first = TlsIdentity.load(tmp_path, PASSPHRASE).fingerprint
    second = TlsIdentity.load(tmp_path, PASSPHRASE).fingerprint
    assert first == second == node.fingerprint


def test_save_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    identity().save(tmp_path, PASSPHRASE)
    with pytest.raises(TlsError, match="already holds a TLS key"):
        identity().save(tmp_path, PASSPHRASE)


def test_save_refuses_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="empty passphrase"):
        identity().save(tmp_path, b"")


def test_key_of_another_identity_refused(tmp_path: Path) -> None:
    identity().save(tmp_path / "a", PASSPHRASE)
    identity().save(tmp_path / "b", PASSPHRASE)
    (tmp_path / "a" / "tls.key").write_bytes((tmp_path / "b" / "tls.key").read_bytes())
    with pytest.raises(TlsError, match="does not belong"):
        TlsIdentity.load(tmp_path / "a", PASSPHRASE)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: data.replace(b'"memlimit":', b'"memlimit":9', 1),
        lambda data: data.replace(b'"version":1', b'"version":2', 1),
        lambda data: data[data.index(b"-----BEGIN") :],
        lambda data: b"garbage",
    ],
    ids=["huge-memlimit", "unknown-version", "header-stripped", "garbage"],
)
def test_damaged_key_file_refused(tmp_path: Path, tamper: Callable[[bytes], bytes]) -> None:
    identity().save(tmp_path, PASSPHRASE)
    key_file = tmp_path / "tls.key"
    key_file.write_bytes(tamper(key_file.read_bytes()))
    with pytest.raises(TlsError, match="damaged"):
        TlsIdentity.load(tmp_path, PASSPHRASE)


def test_missing_identity_refused(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="no readable TLS identity"):
        TlsIdentity.load(tmp_path, PASSPHRASE)


# --- Pins --------------------------------------------------------------------------------------


def test_check_pin_returns_evidence() -> None:
    peer = identity("Росгвардия")
    evidence = check_pin(peer.certificate_der, {peer.fingerprint})
    assert evidence == PinEvidence(
        fingerprint=peer.fingerprint, party_id="Росгвардия", not_after=peer.not_after
    )


def test_unpinned_certificate_refused() -> None:
    peer, impostor = identity("Росгвардия"), identity("Росгвардия")
    with pytest.raises(TlsError, match="not pinned"):
        check_pin(impostor.certificate_der, {peer.fingerprint})


def test_garbage_certificate_refused() -> None:
    with pytest.raises(TlsError, match=r"not a valid X\.509 certificate"):
        check_pin(b"\x30\x03\x02\x01\x00", set())


def test_subject_is_rfc4514() -> None:
    assert certificate_subject(identity("alpha").certificate_der) == "O=alpha,CN=alpha"


# --- Contexts -----------------------------------------------------------------------------------


def test_contexts_trust_only_the_pins_and_speak_only_tls13() -> None:
    node, peer = identity("alpha"), identity("beta")
    server = server_context(node, [peer.certificate_pem])
    client = client_context(node, peer.certificate_der)
    for context in (server, client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.maximum_version == ssl.TLSVersion.TLSv1_3
        assert context.verify_mode == ssl.CERT_REQUIRED
        # The one pinned certificate is the whole trust store (it is not a CA, so
        # get_ca_certs() would not list it).
        assert context.cert_store_stats() == {"crl": 0, "x509": 1, "x509_ca": 0}
    assert server.num_tickets == 0
    assert client.check_hostname is False


def test_server_context_without_pins_refused() -> None:
    with pytest.raises(TlsError, match="no pinned peer certificates"):
        server_context(identity(), [])


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[bytes | None, BaseException | None]:
    """One handshake over a socket pair; returns the client certificate the server saw and
    the errors of both ends (server's, then client's), joined."""
    server_end, client_end = socket.socketpair()
    seen: list[bytes | None] = []
    server_errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(server_end, server_side=True) as tls:
                seen.append(tls.getpeercert(binary_form=True))
                tls.sendall(tls.recv(5))
        except (ssl.SSLError, OSError) as e:
            server_errors.append(e)
            server_end.close()

    thread = threading.Thread(target=serve)
    thread.start()
    error: BaseException | None = None
    try:
        with client.wrap_socket(client_end) as tls:
            tls.sendall(b"hello")
            if tls.recv(5) != b"hello":
                raise ConnectionError("no echo")
    except (ssl.SSLError, OSError) as e:
        error = e
    thread.join(10)
    # In TLS 1.3 the client may finish its side before the server refuses the client's
    # certificate, so the refusal's reason is on whichever end saw it first.
    if error is not None or server_errors:
        error = ssl.SSLError(" | ".join(str(e) for e in [*server_errors, error] if e))
    return (seen[0] if seen else None), error


@pytest.mark.parametrize(
    ("server_key", "client_key"),
    [("ed25519", "ed25519"), ("ecdsa-p256", "ed25519"), ("ed25519", "ecdsa-p256")],
)
def test_mutual_handshake_with_pinned_certificates(server_key: str, client_key: str) -> None:
    server_node = identity("alpha", key_type=server_key)
    client_node = identity("beta", key_type=client_key)
    peer_der, error = _handshake(
        server_context(server_node, [client_node.certificate_pem]),
        client_context(client_node, server_node.certificate_pem),
    )
    assert error is None
    assert peer_der == client_node.certificate_der


def test_handshake_refusals_name_their_reason() -> None:
    server_node, client_node, stranger = identity("alpha"), identity("beta"), identity("beta")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = identity("beta", now=past, valid_days=1)
    cases = {
        # An unpinned client certificate: the server refuses it as signed by an unknown
        # issuer (the client may see the "unknown CA" alert or just the closed socket).
        "certificate verify failed": (
            server_context(server_node, [client_node.certificate_pem]),
            client_context(stranger, server_node.certificate_pem),
        ),
        # A pinned but expired client certificate: refused for its dates.
        "certificate has expired": (
            server_context(server_node, [expired.certificate_pem]),
            client_context(expired, server_node.certificate_pem),
        ),
        # A server certificate other than the pinned one: the client refuses it.
        "self-signed certificate": (
            server_context(server_node, [client_node.certificate_pem]),
            client_context(client_node, stranger.certificate_pem),
        ),
    }
    for reason, (server, client) in cases.items():
        peer_der, error = _handshake(server, client)
        assert peer_der is None
        assert reason in str(error)


def test_certificate_issued_by_pinned_key_refused(tmp_path: Path) -> None:
    # The pinned certificate is not a CA: its holder cannot mint a second identity (here one
    # naming another Party) that a peer pinning the first would accept.
    server_node, holder = identity("alpha"), identity("beta")
    issuer = x509.load_der_x509_certificate(holder.certificate_der)
    key = holder._key
    forged_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gamma")])
    forged = (
        x509.CertificateBuilder()
        .subject_name(forged_name)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issuer.not_valid_before_utc)
        .not_valid_after(issuer.not_valid_after_utc)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, None)
    )
    forged_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    forged_client.check_hostname = False
    forged_client.load_verify_locations(cadata=server_node.certificate_pem.decode())
    (tmp_path / "forged.pem").write_bytes(
        forged.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    forged_client.load_cert_chain(tmp_path / "forged.pem")

    peer_der, error = _handshake(
        server_context(server_node, [holder.certificate_pem]), forged_client
    )
    assert peer_der is None
    assert error is not None


# --- Adopting a rotated identity on a live context (issue 5: rotation without downtime) ----


def _presented(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes | None:
    """The certificate (DER) the server presented in one handshake, as the client saw it."""
    server_end, client_end = socket.socketpair()

    def serve() -> None:
        try:
            with server.wrap_socket(server_end, server_side=True) as tls:
                tls.sendall(tls.recv(1))
        except (ssl.SSLError, OSError):
            server_end.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(client_end) as tls:
            tls.sendall(b"!")
            tls.recv(1)
            return tls.getpeercert(binary_form=True)
    finally:
        thread.join(10)


def test_reload_identity_makes_the_peer_context_present_the_new_certificate() -> None:
    """A node's peer API context, built with its old TLS identity, presents the rotated one
    to the next handshake; the pinned peers are still trusted (issue 5, ADR 0010)."""
    old, new, peer = identity("МВД-РБ"), identity("МВД-РБ"), identity("Росгвардия")
    context = server_context(old, [peer.certificate_pem])
    reload_identity(context, new)
    # The peer trusts both certificates during the overlap window and sees the new one.
    both = client_context(peer, old.certificate_pem + new.certificate_pem)
    presented = _presented(context, both)
    assert presented is not None
    assert certificate_fingerprint(presented) == new.fingerprint
    # Mutual TLS still works with a peer that pins only the new certificate.
    peer_der, error = _handshake(context, client_context(peer, new.certificate_pem))
    assert error is None
    assert peer_der == peer.certificate_der


def test_attack_old_certificate_pinned_alone_no_longer_matches_after_reload() -> None:
    """After the reload the old certificate is not what the context presents: a client
    pinning only the old certificate refuses the server, as it would after a restart."""
    old, new, peer = identity("МВД-РБ"), identity("МВД-РБ"), identity("Росгвардия")
    context = server_context(old, [peer.certificate_pem])
    reload_identity(context, new)
    peer_der, error = _handshake(context, client_context(peer, old.certificate_pem))
    assert peer_der is None
    assert "self-signed certificate" in str(error)


def test_reload_identity_on_the_local_context_serves_the_new_tls_crt() -> None:
    """The local API context presents the new certificate, which local clients read from
    the home's tls/tls.crt."""
    old, new = identity("МВД-РБ"), identity("МВД-РБ")
    context = local_server_context(old)
    reload_identity(context, new)
    client = ssl.create_default_context(cadata=new.certificate_pem.decode("ascii"))
    client.check_hostname = False
    presented = _presented(context, client)
    assert presented == new.certificate_der
