"""The X.509 layer: the only module of Accord besides `_primitives` that touches pyca's x509
and hazmat APIs, and only for the TLS identity of a node (`crypto/tls.py`).

Everything here is private to `crypto/`. The recipes in `crypto/tls.py` are the public
surface; this module builds and parses certificates and wraps private keys.

Invariants:
- A private key leaves this module only as a PKCS#8 PEM encrypted under a password the caller
  supplies (`encrypt_private_key_pem`); there is no unencrypted export.
- Certificates are accepted as PEM or DER and always parsed completely before use
  (`parse_certificate`); a `CertificateInfo` holds the exact DER bytes it was parsed from, so
  its fingerprint is the fingerprint of the bytes a peer presented.
- Every failure of pyca's parsers is funnelled into `X509Error`.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateInfo",
    "KeyType",
    "PrivateKey",
    "X509Error",
    "decrypt_private_key_pem",
    "encrypt_private_key_pem",
    "generate_private_key",
    "parse_certificate",
    "public_key_der",
    "self_signed_certificate",
]

KeyType: TypeAlias = Literal["ed25519", "ecdsa-p256"]
PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

_PEM_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"


class X509Error(Exception):
    """A certificate or key could not be built, parsed or decrypted."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """A fully parsed certificate and the exact DER bytes it came from."""

    der: bytes
    common_name: str | None
    subject_rfc4514: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    public_key_der: bytes

    @property
    def pem(self) -> bytes:
        return x509.load_der_x509_certificate(self.der).public_bytes(serialization.Encoding.PEM)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def generate_private_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise X509Error(f"unsupported key type {key_type!r}")


def public_key_der(key: PrivateKey) -> bytes:
    """The SubjectPublicKeyInfo DER of the key's public half."""
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def self_signed_certificate(
    key: PrivateKey,
    *,
    common_name: str,
    organization: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> bytes:
    """A self-signed end-entity certificate for TLS server and client auth, as DER.

    The certificate is deliberately not a CA (basicConstraints CA:FALSE, keyUsage without
    keyCertSign): a peer that pins it as its only trust anchor must not accept any other
    certificate that this key signs.
    """
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )
    general_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    general_names += [x509.IPAddress(ip) for ip in ip_addresses]
    public = key.public_key()
    try:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(general_names), critical=False)
            # OpenSSL's strict verification mode expects both key identifiers.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
            )
        )
        # Ed25519 signs the message itself (no separate digest); ECDSA needs SHA-256.
        algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        certificate = builder.sign(key, algorithm)
    except (ValueError, TypeError) as e:
        raise X509Error(f"cannot build the certificate: {e}") from e
    return certificate.public_bytes(serialization.Encoding.DER)


def parse_certificate(data: bytes) -> CertificateInfo:
    """Parses one certificate given as PEM or DER; raises `X509Error` on anything else."""
    try:
        if data.lstrip().startswith(_PEM_CERT_MARKER):
            certificate = x509.load_pem_x509_certificate(data)
            der = certificate.public_bytes(serialization.Encoding.DER)
        else:
            certificate = x509.load_der_x509_certificate(data)
            # Keep the bytes as presented: the fingerprint must be that of what the peer
            # sent, never of a re-encoding.
            der = bytes(data)
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = names[0].value if names else None
        if isinstance(common_name, bytes):
            common_name = common_name.decode("utf-8", errors="strict")
        return CertificateInfo(
            der=der,
            common_name=common_name,
            subject_rfc4514=certificate.subject.rfc4514_string(),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            public_key_der=certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise X509Error(f"not a valid X.509 certificate: {e}") from e


def encrypt_private_key_pem(key: PrivateKey, password: bytes) -> bytes:
    """The key as PKCS#8 PEM, encrypted (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC).

    pyca's PKCS#8 encryption stretches the password with only 2048 PBKDF2 rounds, so callers
    pass a high-entropy password (an Argon2id output or random bytes), never a passphrase.
    """
    if not password:
        raise X509Error("refusing to export a private key without a password")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )


def decrypt_private_key_pem(data: bytes, password: bytes) -> PrivateKey:
    """Decrypts an encrypted PKCS#8 PEM; raises `X509Error` on a wrong password or bad file."""
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise X509Error("the private key could not be decrypted") from e
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise X509Error(f"unsupported private key type {type(key).__name__}")
