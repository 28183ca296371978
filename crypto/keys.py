"""Keys as opaque objects: Ed25519 signing keys (seal, signatory) and X25519 encryption keys.

Invariants:
- Private key bytes never leave this package except through a call that names its
  wrapping: `to_encrypted_file()` (Argon2id + XChaCha20-Poly1305) or the explicit
  `export_age_identity_unencrypted()`.
- A key id is the SHA-256 of a domain-separated encoding of the algorithm and the public
  key, so it is stable, reproducible by any auditor, and never equal for two algorithms.
- A key file is versioned; its whole header (algorithm, key id, KDF parameters, nonce) is
  the AEAD's associated data, so no field can be swapped without the passphrase.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from . import _age, _primitives
from .canonical import dumps
from .errors import KeyFileError, VerificationError

__all__ = [
    "DecryptionKey",
    "DecryptionKeyRing",
    "KdfCost",
    "Passphrase",
    "RecipientKey",
    "Signer",
    "SigningKey",
    "VerifyKey",
    "key_id_for",
    "load_private_key",
]

KEY_FILE_FORMAT = "accord-private-key"
KEY_FILE_VERSION = 1


class Algorithm(StrEnum):
    ED25519 = "ed25519"
    X25519 = "x25519"


def key_id_for(algorithm: str, public: bytes) -> str:
    """The stable id of a public key: SHA-256 over 'accord-key-id/v1', algorithm, key."""
    return hashlib.sha256(
        b"accord-key-id/v1\x00" + algorithm.encode("ascii") + b"\x00" + public
    ).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:
        raise ValueError(f"{what} is not valid base64") from e


# --- Public keys ---------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key that checks signatures."""

    _public: bytes

    def __post_init__(self) -> None:
        if len(self._public) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @cached_property
    def key_id(self) -> str:  # a digest: computed once per key object
        return key_id_for(Algorithm.ED25519, self._public)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True only for a valid signature under libsodium's strict rules."""
        return _primitives.ed25519_verify(self._public, message, signature)

    def to_dict(self) -> dict[str, str]:
        return {"alg": Algorithm.ED25519.value, "key_id": self.key_id, "public": _b64(self._public)}

    @classmethod
    def from_dict(cls, data: Any) -> VerifyKey:
        return _public_from_dict(data, Algorithm.ED25519, cls)


@dataclass(frozen=True)
class RecipientKey:
    """An X25519 public key that messages are encrypted to."""

    _public: bytes

    def __post_init__(self) -> None:
        if len(self._public) != 32:
            raise ValueError("an X25519 public key is 32 bytes")

    @cached_property
    def key_id(self) -> str:  # a digest: computed once per key object
        return key_id_for(Algorithm.X25519, self._public)

    def to_age_recipient(self) -> str:
        """The key as a standard age recipient string (age1...)."""
        return _age.encode_recipient(self._public)

    @classmethod
    def from_age_recipient(cls, text: str) -> RecipientKey:
        return cls(_age.decode_recipient(text))

    def to_dict(self) -> dict[str, str]:
        return {"alg": Algorithm.X25519.value, "key_id": self.key_id, "public": _b64(self._public)}

    @classmethod
    def from_dict(cls, data: Any) -> RecipientKey:
        return _public_from_dict(data, Algorithm.X25519, cls)


_K = TypeVar("_K", VerifyKey, RecipientKey)


def _public_from_dict(data: Any, algorithm: Algorithm, cls: type[_K]) -> _K:
    """Parse a public key; the key id, when given, must match the key."""
    if not isinstance(data, dict) or data.get("alg") != algorithm.value:
        raise ValueError(f"expected an {algorithm.value} public key object")
    key = cls(_unb64(data.get("public"), "public key"))
    if "key_id" in data and data["key_id"] != key.key_id:
        raise ValueError("public key does not match its key_id")
    return key


# --- Private keys --------------------------------------------------------------------


@runtime_checkable
class Signer(Protocol):
    """Anything that signs bytes with an Ed25519 key: a key file, a PKCS#11 token."""

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...

    def verify_key(self) -> VerifyKey: ...


class Passphrase(bytes):
    """A passphrase that a long-running process keeps to reopen its key files (a node
    adopting rotated keys): the Argon2id derivations made with it are remembered, by salt
    and cost, so reopening the same file costs no second derivation, and no second peak
    of its memory (64 MiB at the interactive cost) while the node serves.

    It is the passphrase's bytes, so it goes wherever a passphrase does; plain `bytes`
    remember nothing. What it remembers opens only the files the passphrase opens, and
    lives as long as the object, which the process holds anyway. Never give one to code
    that must forget a passphrase after one use (a signatory's, art. 4.4)."""

    _derived: dict[tuple[bytes, int, int, int], bytes]

    def __new__(cls, value: bytes) -> Passphrase:
        made = super().__new__(cls, value)
        made._derived = {}
        return made

    def __repr__(self) -> str:  # never print the passphrase, even in a traceback
        return "<Passphrase>"

    __str__ = __repr__


def derive_from_passphrase(
    passphrase: bytes, salt: bytes, opslimit: int, memlimit: int, size: int = 32
) -> bytes:
    """Argon2id of `passphrase` (remembered when it is a `Passphrase`)."""
    if not isinstance(passphrase, Passphrase):
        return _primitives.argon2id(passphrase, salt, opslimit, memlimit, size)
    slot = (salt, opslimit, memlimit, size)
    derived = passphrase._derived.get(slot)
    if derived is None:
        derived = _primitives.argon2id(bytes(passphrase), salt, opslimit, memlimit, size)
        passphrase._derived[slot] = derived
    return derived


@dataclass(frozen=True)
class KdfCost:
    """Argon2id cost of a key file; stored in the file, so it can be raised later."""

    opslimit: int
    memlimit: int

    @classmethod
    def interactive(cls) -> KdfCost:
        return cls(
            _primitives.ARGON2ID_OPSLIMIT_INTERACTIVE, _primitives.ARGON2ID_MEMLIMIT_INTERACTIVE
        )

    @classmethod
    def moderate(cls) -> KdfCost:
        return cls(_primitives.ARGON2ID_OPSLIMIT_MODERATE, _primitives.ARGON2ID_MEMLIMIT_MODERATE)


class _PrivateKey:
    """Shared behaviour of the two private key types: encrypted files."""

    _algorithm: Algorithm
    _secret: bytes
    _public: bytes

    def __repr__(self) -> str:  # never print secret material, even in a traceback
        return f"<{type(self).__name__} {self.key_id[:16]}>"

    @cached_property
    def key_id(self) -> str:  # a digest: computed once per key object
        return key_id_for(self._algorithm, self._public)

    def to_encrypted_file(self, passphrase: bytes, *, cost: KdfCost | None = None) -> bytes:
        """The key encrypted at rest: Argon2id(passphrase) -> XChaCha20-Poly1305."""
        if not passphrase:
            raise ValueError("a key file needs a non-empty passphrase")
        cost = cost or KdfCost.interactive()
        salt = _primitives.random_bytes(_primitives.ARGON2ID_SALT_SIZE)
        nonce = _primitives.random_bytes(_primitives.XCHACHA_NONCE_SIZE)
        header: dict[str, Any] = {
            "format": KEY_FILE_FORMAT,
            "version": KEY_FILE_VERSION,
            "alg": self._algorithm.value,
            "key_id": self.key_id,
            "kdf": {
                "name": "argon2id",
                "opslimit": cost.opslimit,
                "memlimit": cost.memlimit,
                "salt": _b64(salt),
            },
            "cipher": "xchacha20poly1305",
            "nonce": _b64(nonce),
        }
        wrapping = _primitives.argon2id(passphrase, salt, cost.opslimit, cost.memlimit)
        sealed = _primitives.xchacha20poly1305_encrypt(wrapping, nonce, self._secret, dumps(header))
        document = dict(header, ciphertext=_b64(sealed))
        return json.dumps(document, indent=2).encode("utf-8") + b"\n"

    def save(self, path: Path, passphrase: bytes, *, cost: KdfCost | None = None) -> None:
        """Write the encrypted key file atomically with mode 0600."""
        data = self.to_encrypted_file(passphrase, cost=cost)
        tmp = path.with_name(path.name + ".tmp")
        tmp.touch(mode=0o600)
        tmp.write_bytes(data)
        tmp.replace(path)


class SigningKey(_PrivateKey):
    """An Ed25519 private key: a node's seal or a signatory's personal key."""

    _algorithm = Algorithm.ED25519

    def __init__(self, _seed: bytes) -> None:
        self._secret = _seed
        self._expanded = _primitives.ed25519_expand(_seed)
        self._public = self._expanded[32:]

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(_primitives.ed25519_generate())

    def verify_key(self) -> VerifyKey:
        return VerifyKey(self._public)

    def sign(self, message: bytes) -> bytes:
        return _primitives.ed25519_sign(self._expanded, message)


class DecryptionKey(_PrivateKey):
    """An X25519 private key: a node's encryption identity."""

    _algorithm = Algorithm.X25519

    def __init__(self, _private: bytes) -> None:
        self._secret = _private
        self._loaded = _primitives.X25519Identity(_private)
        self._public = self._loaded.public

    @classmethod
    def generate(cls) -> DecryptionKey:
        return cls(_primitives.x25519_generate())

    def recipient(self) -> RecipientKey:
        return RecipientKey(self._public)

    def export_age_identity_unencrypted(self) -> str:
        """The key as an age identity (AGE-SECRET-KEY-1...), in the clear, for `age -d -i`."""
        return _age.encode_identity(self._secret)

    @classmethod
    def from_age_identity(cls, text: str) -> DecryptionKey:
        return cls(_age.decode_identity(text))

    def _unwrap_age(self, header: _age.Header) -> bytes:
        return _age.unwrap_file_key(header, self._loaded)


class DecryptionKeyRing(DecryptionKey):
    """The node's current encryption key and the rotated-out ones still in their overlap
    window, as one identity: messages sealed to any of them open (none in flight is lost
    to a rotation), and new messages are addressed to the current one only.

    A ring is never written to disk: each key keeps its own encrypted file.
    """

    def __init__(self, current: DecryptionKey, previous: Sequence[DecryptionKey] = ()) -> None:
        super().__init__(current._secret)
        self._previous = tuple(k for k in previous if k.key_id != current.key_id)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return (self.key_id, *(k.key_id for k in self._previous))

    def to_encrypted_file(self, passphrase: bytes, *, cost: KdfCost | None = None) -> bytes:
        raise TypeError("a key ring is not saved; save each of its keys")

    def _unwrap_age(self, header: _age.Header) -> bytes:
        try:
            return super()._unwrap_age(header)
        except _age.AgeError as e:
            # Only "no stanza for this key" sends us to the older keys; a bad MAC or a
            # malformed header is an answer, not a miss.
            if not self._previous or e.kind != "no match":
                raise
        last: _age.AgeError | None = None
        for key in self._previous:
            try:
                return key._unwrap_age(header)
            except _age.AgeError as e:
                last = e
        assert last is not None
        raise last


def load_private_key(data: bytes, passphrase: bytes) -> SigningKey | DecryptionKey:
    """Open an encrypted key file; raise `KeyFileError` on a wrong passphrase or damage."""
    try:
        document = json.loads(data.decode("utf-8"))
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        header = {k: v for k, v in document.items() if k != "ciphertext"}
        if header.get("format") != KEY_FILE_FORMAT:
            raise ValueError("not an Accord private key file")
        if header.get("version") != KEY_FILE_VERSION:
            raise ValueError(f"unsupported key file version {header.get('version')!r}")
        kdf = header["kdf"]
        if kdf.get("name") != "argon2id" or header.get("cipher") != "xchacha20poly1305":
            raise ValueError("unsupported KDF or cipher")
        algorithm = Algorithm(header["alg"])
        salt = _unb64(kdf["salt"], "salt")
        nonce = _unb64(header["nonce"], "nonce")
        sealed = _unb64(document["ciphertext"], "ciphertext")
        opslimit, memlimit = int(kdf["opslimit"]), int(kdf["memlimit"])
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise KeyFileError(f"damaged or unknown key file: {e}") from e
    try:
        wrapping = derive_from_passphrase(passphrase, salt, opslimit, memlimit)
        secret = _primitives.xchacha20poly1305_decrypt(wrapping, nonce, sealed, dumps(header))
    except _primitives.PrimitiveError as e:
        raise KeyFileError(
            "wrong passphrase for this key file (or the file was altered): "
            "check ACCORD_PASSPHRASE or the passphrase you typed"
        ) from e
    key: SigningKey | DecryptionKey = (
        SigningKey(secret) if algorithm is Algorithm.ED25519 else DecryptionKey(secret)
    )
    if key.key_id != header.get("key_id"):
        raise KeyFileError("key file is damaged: the key does not match its key_id")
    return key


def verify_signature(key: VerifyKey, message: bytes, signature: bytes) -> None:
    """Raise `VerificationError` unless `signature` is valid for `message` under `key`."""
    if not key.verify(message, signature):
        raise VerificationError("signature does not verify")
