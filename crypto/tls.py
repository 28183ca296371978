"""A node's TLS identity and the TLS contexts for node-to-node mutual TLS (DESIGN.md §9).

Each node holds one self-signed certificate and its private key. Peers do not trust any
certificate authority: each side pins the other's certificate (its SHA-256 fingerprint is
what the peer registry records), and the pinned certificates are the only trust anchors of
the contexts built here. See docs/adr/0004-mutual-tls.md.

Invariants:
- The private key is an opaque object inside `TlsIdentity`. It leaves memory only through
  `TlsIdentity.save`, as PKCS#8 PEM encrypted under a password derived from the operator's
  passphrase with Argon2id, and, to hand it to the `ssl` module, as PKCS#8 PEM encrypted under
  a one-time random password that never leaves memory. It is never written unencrypted.
- Every context built here speaks TLS 1.3 only, requires a certificate from the other side
  and trusts exactly the pinned certificates: no system CA store is ever loaded.
- A fingerprint is the lowercase hex SHA-256 of the certificate's DER bytes.
- Every failure raises `TlsError`; verification (`check_pin`) returns evidence on success.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import ssl
import tempfile
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from accord.crypto import _primitives, _x509
from accord.crypto._x509 import KeyType
from accord.crypto.errors import CryptoError
from accord.crypto.keys import derive_from_passphrase

__all__ = [
    "PinEvidence",
    "TlsError",
    "TlsIdentity",
    "add_pins",
    "certificate_fingerprint",
    "certificate_not_after",
    "certificate_subject",
    "check_pin",
    "client_context",
    "local_server_context",
    "reload_identity",
    "server_context",
    "split_pem_bundle",
]

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"

_KDF_HEADER = "Accord-TLS-Key-KDF:"
_KDF_VERSION = 1
_ENCRYPTED_PEM_MARKER = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
# Bounds on the Argon2id costs a key file may ask for: a damaged or hostile file must not
# make the node spin or allocate unbounded memory before failing.
_MAX_OPSLIMIT = 64
_MIN_MEMLIMIT = 8 * 1024
_MAX_MEMLIMIT = 4 * 1024**3

# A fresh certificate starts a little in the past so that a peer whose clock runs slightly
# behind ours does not refuse it as "not yet valid".
_CLOCK_SKEW = datetime.timedelta(minutes=5)
# RFC 5280's upper bound on a common name (ub-common-name).
_MAX_PARTY_ID = 64
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class TlsError(CryptoError):
    """A TLS identity, pin or context failed; the message says what to do next."""


@dataclass(frozen=True, slots=True)
class PinEvidence:
    """What `check_pin` established: this exact certificate is pinned.

    `party_id` is the certificate's subject common name. It is what the certificate claims;
    it is trustworthy only because the fingerprint was found among the pins, and callers
    should map the fingerprint to their peer registry entry rather than trust the name alone.
    """

    fingerprint: str
    party_id: str
    not_after: datetime.datetime


def certificate_fingerprint(certificate: bytes) -> str:
    """The pin of a certificate (PEM or DER): lowercase hex SHA-256 of its DER bytes."""
    return _parse(certificate).sha256


def certificate_not_after(certificate: bytes) -> datetime.datetime:
    """When a certificate (PEM or DER) expires; `TlsError` if it cannot be read."""
    return _parse(certificate).not_after


def certificate_subject(certificate: bytes) -> str:
    """The subject distinguished name of a certificate (PEM or DER) as an RFC 4514 string."""
    return _parse(certificate).subject_rfc4514


def check_pin(peer_cert_der: bytes, pins: Container[str]) -> PinEvidence:
    """Checks that a peer's certificate is pinned; raises `TlsError` if it is not.

    `pins` holds fingerprints as produced by `certificate_fingerprint`.
    """
    # 1. Parse the certificate completely: a pin must name a well-formed certificate, and the
    #    subject is read from the same bytes that are hashed.
    info = _parse(peer_cert_der)
    # 2. Compare the fingerprint of the exact bytes presented, not of a re-encoding, so two
    #    encodings of one certificate cannot yield two identities.
    if info.sha256 not in pins:
        raise TlsError(f"peer certificate {info.sha256} is not pinned")
    # 3. The party id comes from the pinned certificate's subject.
    if not info.common_name:
        raise TlsError(f"pinned certificate {info.sha256} has no subject common name")
    return PinEvidence(fingerprint=info.sha256, party_id=info.common_name, not_after=info.not_after)


class TlsIdentity:
    """A node's TLS key pair and self-signed certificate.

    Build one with `generate` or `load`; the private key cannot be read from the object.
    """

    __slots__ = ("_certificate", "_key")

    def __init__(self, key: _x509.PrivateKey, certificate: _x509.CertificateInfo) -> None:
        if _x509.public_key_der(key) != certificate.public_key_der:
            raise TlsError("the TLS private key does not belong to the certificate")
        self._key = key
        self._certificate = certificate

    def __repr__(self) -> str:
        return f"TlsIdentity(party_id={self.party_id!r}, fingerprint={self.fingerprint!r})"

    @classmethod
    def generate(
        cls,
        party_id: str,
        *,
        hosts: Sequence[str],
        valid_days: int = 365,
        now: datetime.datetime | None = None,
        key_type: KeyType = "ed25519",
    ) -> TlsIdentity:
        """A fresh key and a self-signed certificate for `party_id`, valid for `hosts`.

        `hosts` are the DNS names and IP literals the node is reached at (SubjectAltName).
        `now` must be timezone-aware; it defaults to the current time.
        """
        if not party_id or len(party_id) > _MAX_PARTY_ID or not party_id.isprintable():
            raise TlsError(f"party id must be 1 to {_MAX_PARTY_ID} printable characters")
        if valid_days < 1:
            raise TlsError("valid_days must be at least 1")
        dns_names, ip_addresses = _split_hosts(hosts)
        start = _aware(now) if now is not None else datetime.datetime.now(datetime.UTC)
        key = _x509.generate_private_key(key_type)
        try:
            der = _x509.self_signed_certificate(
                key,
                common_name=party_id,
                organization=party_id,
                dns_names=dns_names,
                ip_addresses=ip_addresses,
                not_before=start - _CLOCK_SKEW,
                not_after=start + datetime.timedelta(days=valid_days),
            )
        except _x509.X509Error as e:
            raise TlsError(str(e)) from e
        return cls(key, _parse(der))

    # --- Public parts -----------------------------------------------------------------

    @property
    def party_id(self) -> str:
        return self._certificate.common_name or ""

    @property
    def certificate_der(self) -> bytes:
        return self._certificate.der

    @property
    def certificate_pem(self) -> bytes:
        return self._certificate.pem

    @property
    def fingerprint(self) -> str:
        """What peers pin: lowercase hex SHA-256 of the DER certificate."""
        return self._certificate.sha256

    @property
    def not_after(self) -> datetime.datetime:
        return self._certificate.not_after

    def expires_within(self, days: float, now: datetime.datetime | None = None) -> bool:
        """True if the certificate is expired or expires in less than `days` days."""
        at = _aware(now) if now is not None else datetime.datetime.now(datetime.UTC)
        return at + datetime.timedelta(days=days) >= self.not_after

    # --- Storage at rest --------------------------------------------------------------

    def save(self, directory: Path, passphrase: bytes, *, overwrite: bool = False) -> None:
        """Writes `tls.crt` (PEM) and `tls.key` (mode 0600) into `directory`.

        `tls.key` is one self-contained file: a header line with the Argon2id salt and costs,
        then the key as PKCS#8 PEM encrypted under hex(Argon2id(passphrase, salt)). The
        passphrase is thus stretched by Argon2id, not by PKCS#8's weak PBKDF2 default, and
        the salt cannot be separated from the key it belongs to. Refuses to replace an
        existing key unless `overwrite` is set, because losing a node's key cannot be undone.
        """
        if not passphrase:
            raise TlsError("an empty passphrase would leave the TLS key unprotected")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not overwrite and (directory / KEY_FILE).exists():
            raise TlsError(
                f"{directory} already holds a TLS key; move it away first or pass overwrite=True"
            )
        salt = _primitives.random_bytes(_primitives.ARGON2ID_SALT_SIZE)
        # The same Argon2id cost as the node's other key files (libsodium's "interactive"):
        # "moderate" needs 256 MiB at every start, four times a node's working memory. The
        # cost is stored in the file, so existing keys keep theirs.
        opslimit = _primitives.ARGON2ID_OPSLIMIT_INTERACTIVE
        memlimit = _primitives.ARGON2ID_MEMLIMIT_INTERACTIVE
        password = _pem_password(passphrase, salt, opslimit, memlimit)
        header = {
            "version": _KDF_VERSION,
            "kdf": "argon2id",
            "salt": salt.hex(),
            "opslimit": opslimit,
            "memlimit": memlimit,
        }
        # RFC 7468 lets explanatory text precede the PEM block, so `openssl pkey` still reads
        # the file (given the derived password).
        key_file = f"{_KDF_HEADER} {json.dumps(header, separators=(',', ':'))}\n".encode(
            "ascii"
        ) + _x509.encrypt_private_key_pem(self._key, password)
        _write_file(directory / KEY_FILE, key_file, 0o600)
        _write_file(directory / CERT_FILE, self.certificate_pem, 0o644)

    @classmethod
    def load(cls, directory: Path, passphrase: bytes) -> TlsIdentity:
        """Reads an identity written by `save`; raises `TlsError` on a wrong passphrase."""
        try:
            cert_bytes = (directory / CERT_FILE).read_bytes()
            key_bytes = (directory / KEY_FILE).read_bytes()
        except OSError as e:
            raise TlsError(f"no readable TLS identity in {directory}: {e}") from e
        salt, opslimit, memlimit, pem = _parse_key_file(key_bytes, directory)
        password = _pem_password(passphrase, salt, opslimit, memlimit)
        try:
            key = _x509.decrypt_private_key_pem(pem, password)
        except _x509.X509Error as e:
            raise TlsError(
                f"wrong passphrase for the TLS key in {directory} "
                f"({KEY_FILE} could not be decrypted; check the passphrase, "
                f"or restore {KEY_FILE} from a backup if it was damaged)"
            ) from e
        certificate = _parse(cert_bytes)
        if _x509.public_key_der(key) != certificate.public_key_der:
            raise TlsError(f"{KEY_FILE} in {directory} does not belong to {CERT_FILE}")
        return cls(key, certificate)

    # --- Handing the key to the ssl module ----------------------------------------------

    def _load_into(self, context: ssl.SSLContext) -> None:
        """Loads our certificate and key into `context` without writing the key unencrypted.

        The `ssl` module reads keys only from files, so the key is written, encrypted under a
        one-time random password held only in memory, to a private temporary file that is
        removed as soon as OpenSSL has read it.
        """
        password = _primitives.random_bytes(32).hex().encode("ascii")
        bundle = self.certificate_pem + _x509.encrypt_private_key_pem(self._key, password)
        with tempfile.TemporaryDirectory(prefix="accord-tls-") as tmp:
            path = Path(tmp) / "chain.pem"
            _write_file(path, bundle, 0o600)
            try:
                context.load_cert_chain(path, password=lambda: password)
            except ssl.SSLError as e:
                raise TlsError(f"ssl refused the TLS identity: {e}") from e


def server_context(identity: TlsIdentity, pinned_peer_certs: Iterable[bytes]) -> ssl.SSLContext:
    """The context for the peer API listener: TLS 1.3, client certificate required, and
    the pinned peers' certificates (PEM or DER) as the only trust anchors."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    # Every connection runs a full handshake and certificate check against the current
    # pins: with tickets, a resumed session would skip both.
    context.num_tickets = 0
    _trust_only(context, pinned_peer_certs)
    identity._load_into(context)
    return context


def client_context(identity: TlsIdentity, pinned_server_cert: bytes) -> ssl.SSLContext:
    """The context for calling one peer: TLS 1.3, we present our certificate, and the peer's
    pinned certificate (PEM or DER) is the only trust anchor. During a TLS rotation's
    overlap window `pinned_server_cert` is a PEM bundle of the peer's old and new
    certificates, and either may answer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The hostname check is off because the pin is stricter: the only certificate that can
    # verify is the pinned one (it is self-signed and cannot issue others), whatever name or
    # address the peer is reached at, while a name check would add nothing to the pin and
    # break peers reached through NAT or a renamed host.
    context.check_hostname = False
    _harden(context)
    _trust_only(context, split_pem_bundle(pinned_server_cert))
    identity._load_into(context)
    return context


_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def split_pem_bundle(data: bytes) -> list[bytes]:
    """The certificates of a PEM bundle, one PEM each; DER or a single PEM as it is."""
    if data.count(_PEM_BEGIN) <= 1:
        return [data]
    return [_PEM_BEGIN + part for part in data.split(_PEM_BEGIN)[1:]]


def add_pins(context: ssl.SSLContext, certificates: Iterable[bytes]) -> None:
    """Trust further pinned peers on a live server context (a peer added while running).

    Removing a pin needs a new context; the peer API also checks every client certificate
    against the registry, so a removed peer is refused at once all the same.
    """
    ders = [_parse(cert).der for cert in certificates]
    if ders:
        context.load_verify_locations(cadata=b"".join(ders))


def reload_identity(context: ssl.SSLContext, identity: TlsIdentity) -> None:
    """Makes a live context present `identity` from its next handshake on.

    This is how a running node adopts a rotated TLS key without a restart (issue 5,
    docs/adr/0010-key-rotation.md): OpenSSL copies a context's certificate and key into each
    connection when it is created, so connections already open keep the certificate they
    were made with, and every new one gets the new certificate. The context's trust anchors
    and settings stay as they are. The key reaches OpenSSL the way it did when the context
    was built (`TlsIdentity._load_into`), never unencrypted on disk. The key and certificate
    of a `TlsIdentity` always belong together, so the context never holds a mismatched
    pair; if `ssl` refuses the identity, `TlsError` says why.
    """
    identity._load_into(context)


def local_server_context(identity: TlsIdentity) -> ssl.SSLContext:
    """The context for the users' local API: TLS 1.2 or newer, server authentication only
    (users authenticate with API tokens); clients trust the node's certificate file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    identity._load_into(context)
    return context


# --- Helpers --------------------------------------------------------------------------------


def _parse(certificate: bytes) -> _x509.CertificateInfo:
    try:
        return _x509.parse_certificate(certificate)
    except _x509.X509Error as e:
        raise TlsError(str(e)) from e


def _aware(now: datetime.datetime) -> datetime.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise TlsError("now must be a timezone-aware datetime")
    return now


def _split_hosts(
    hosts: Sequence[str],
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    if isinstance(hosts, str):
        raise TlsError("hosts must be a sequence of names, not one string")
    if not hosts:
        raise TlsError("a TLS identity needs at least one host name or IP address")
    dns_names: list[str] = []
    ip_addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for host in hosts:
        try:
            ip_addresses.append(ipaddress.ip_address(host))
            continue
        except ValueError:
            pass
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
            raise TlsError(
                f"{host!r} is neither an IP address nor an ASCII DNS name "
                "(write internationalised names in their xn-- form)"
            )
        dns_names.append(host.rstrip(".").lower())
    return dns_names, ip_addresses


def _pem_password(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    # Hex keeps the derived key free of NUL bytes, which OpenSSL's password callbacks and
    # PKCS#8 tools treat as string terminators.
    return derive_from_passphrase(passphrase, salt, opslimit, memlimit).hex().encode("ascii")


def _parse_key_file(data: bytes, directory: Path) -> tuple[bytes, int, int, bytes]:
    """Splits `tls.key` into its Argon2id salt and costs and the encrypted PEM block."""
    damaged = TlsError(f"{KEY_FILE} in {directory} is damaged; restore it from a backup")
    header_line, _, pem = data.partition(b"\n")
    prefix = _KDF_HEADER.encode("ascii") + b" "
    if not header_line.startswith(prefix) or not pem.startswith(_ENCRYPTED_PEM_MARKER):
        raise damaged
    try:
        header = json.loads(header_line[len(prefix) :])
        version, kdf = header["version"], header["kdf"]
        salt = bytes.fromhex(header["salt"])
        opslimit, memlimit = header["opslimit"], header["memlimit"]
    except (ValueError, KeyError, TypeError) as e:
        raise damaged from e
    if (version, kdf) != (_KDF_VERSION, "argon2id"):
        raise damaged
    if len(salt) != _primitives.ARGON2ID_SALT_SIZE:
        raise damaged
    # bool is a subclass of int; the costs must be plain integers within sane bounds.
    if type(opslimit) is not int or type(memlimit) is not int:
        raise damaged
    if not (1 <= opslimit <= _MAX_OPSLIMIT and _MIN_MEMLIMIT <= memlimit <= _MAX_MEMLIMIT):
        raise damaged
    return salt, opslimit, memlimit, pem


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Writes `path` atomically, created with `mode` from the start (no chmod window)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    # Strict mode rejects certificates that break RFC 5280 rules OpenSSL otherwise tolerates.
    context.verify_flags |= ssl.VERIFY_X509_STRICT


def _trust_only(context: ssl.SSLContext, pinned: Iterable[bytes]) -> None:
    """Makes the pinned certificates the context's only trust anchors."""
    ders = [_parse(cert).der for cert in pinned]
    if not ders:
        # An empty trust store would refuse every peer; that is a configuration error.
        raise TlsError("no pinned peer certificates: add the peer to the registry first")
    # The context was created without load_default_certs(), so no system CA is trusted.
    context.load_verify_locations(cadata=b"".join(ders))
