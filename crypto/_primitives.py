"""The primitive layer: the only module of Accord that touches nacl or cryptography.hazmat.

Everything here works on raw bytes and is private to `crypto/`. The recipes in the other
modules of the package are the public, hard-to-misuse surface (pyca's recipes-vs-hazmat
split). A ruff banned-import rule keeps these libraries out of every other module.

Invariants:
- Ed25519 signatures are made by one library (libsodium, through PyNaCl) and checked by one
  verifier (libsodium's strict `crypto_sign_verify_detached`), whatever produced them, so the
  accepted set is the same on every node (see `tests/crypto/test_ed25519_vectors.py`).
- X25519 (libsodium) refuses an all-zero shared secret (a low-order peer point), as age
  requires (see `tests/crypto/test_primitives.py`).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os

import nacl.bindings as _sodium
import nacl.exceptions as _nacl_exc
import nacl.pwhash.argon2id as _argon2id
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes as _hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "ARGON2ID_MEMLIMIT_INTERACTIVE",
    "ARGON2ID_MEMLIMIT_MODERATE",
    "ARGON2ID_OPSLIMIT_INTERACTIVE",
    "ARGON2ID_OPSLIMIT_MODERATE",
    "ChaCha20Poly1305",
    "InvalidTag",
    "PrimitiveError",
    "X25519Identity",
    "argon2id",
    "ed25519_expand",
    "ed25519_generate",
    "ed25519_public",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf_sha256",
    "hmac_equal",
    "hmac_sha256",
    "random_bytes",
    "x25519_generate",
    "x25519_public",
    "x25519_public_and_shared",
    "x25519_shared",
    "xchacha20poly1305_decrypt",
    "xchacha20poly1305_encrypt",
]

ED25519_SEED_SIZE = 32
ED25519_PUBLIC_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
X25519_SIZE = 32

ARGON2ID_OPSLIMIT_INTERACTIVE: int = _argon2id.OPSLIMIT_INTERACTIVE
ARGON2ID_MEMLIMIT_INTERACTIVE: int = _argon2id.MEMLIMIT_INTERACTIVE
ARGON2ID_OPSLIMIT_MODERATE: int = _argon2id.OPSLIMIT_MODERATE
ARGON2ID_MEMLIMIT_MODERATE: int = _argon2id.MEMLIMIT_MODERATE
ARGON2ID_SALT_SIZE: int = _argon2id.SALTBYTES


class PrimitiveError(Exception):
    """A primitive refused its input (bad length, failed authentication, low-order point)."""


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


# --- Ed25519 -------------------------------------------------------------------------


def ed25519_generate() -> bytes:
    """A fresh 32-byte Ed25519 seed (the private key in RFC 8032 form)."""
    return os.urandom(ED25519_SEED_SIZE)


def ed25519_public(seed: bytes) -> bytes:
    if len(seed) != ED25519_SEED_SIZE:
        raise PrimitiveError("Ed25519 seed must be 32 bytes")
    pk, _sk = _sodium.crypto_sign_seed_keypair(seed)
    return bytes(pk)


def ed25519_expand(seed: bytes) -> bytes:
    """libsodium's 64-byte secret key (seed and public key), computed once per key."""
    if len(seed) != ED25519_SEED_SIZE:
        raise PrimitiveError("Ed25519 seed must be 32 bytes")
    _pk, sk = _sodium.crypto_sign_seed_keypair(seed)
    return bytes(sk)


def ed25519_sign(expanded: bytes, message: bytes) -> bytes:
    """Sign with a key from `ed25519_expand`."""
    if len(expanded) != 2 * ED25519_SEED_SIZE:
        raise PrimitiveError("expected an expanded Ed25519 secret key")
    signed = _sodium.crypto_sign(message, expanded)
    return bytes(signed[:ED25519_SIGNATURE_SIZE])


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's strict verification: canonical S, R and A; small-order A and R refused."""
    if len(public) != ED25519_PUBLIC_SIZE or len(signature) != ED25519_SIGNATURE_SIZE:
        return False
    try:
        return bool(_sodium.crypto_sign_open(signature + message, public) is not None)
    except (_nacl_exc.BadSignatureError, _nacl_exc.ValueError, _nacl_exc.TypeError):
        return False


# --- X25519 --------------------------------------------------------------------------
#
# Key agreement runs in libsodium (`crypto_scalarmult`, RFC 7748 with the scalar clamped),
# like the signatures: its fixed-base multiplication derives a public key in about half the
# work of OpenSSL's, which loads a private key with a full ladder. libsodium refuses a
# small-order peer point outright and we still compare the result with zero, so the
# accepted set is the RFC's: every 32-byte string except those giving the all-zero secret.


def x25519_generate() -> bytes:
    """A fresh X25519 private key: 32 bytes from the CSPRNG (clamped when used)."""
    return os.urandom(X25519_SIZE)


def x25519_public(private: bytes) -> bytes:
    if len(private) != X25519_SIZE:
        raise PrimitiveError("X25519 keys must be 32 bytes")
    return bytes(_sodium.crypto_scalarmult_base(private))


def _x25519(private: bytes, peer_public: bytes) -> bytes:
    # PyNaCl passes pointers without checking lengths: every caller checked both are 32.
    try:
        shared = bytes(_sodium.crypto_scalarmult(private, peer_public))
    except _nacl_exc.RuntimeError as e:  # libsodium's refusal of a small-order point
        raise PrimitiveError("X25519 produced the all-zero secret") from e
    if _hmac.compare_digest(shared, bytes(X25519_SIZE)):
        raise PrimitiveError("X25519 produced the all-zero secret")
    return shared


def x25519_public_and_shared(private: bytes, peer_public: bytes) -> tuple[bytes, bytes]:
    """Our public key and the shared secret (an ephemeral key's share and secret)."""
    if len(private) != X25519_SIZE or len(peer_public) != X25519_SIZE:
        raise PrimitiveError("X25519 keys must be 32 bytes")
    return bytes(_sodium.crypto_scalarmult_base(private)), _x25519(private, peer_public)


class X25519Identity:
    """An X25519 private key with its public key derived once, for a node's long-lived
    identity and every agreement it makes."""

    __slots__ = ("_private", "public")

    def __init__(self, private: bytes) -> None:
        if len(private) != X25519_SIZE:
            raise PrimitiveError("X25519 keys must be 32 bytes")
        self._private = bytes(private)
        self.public = bytes(_sodium.crypto_scalarmult_base(self._private))

    def __repr__(self) -> str:
        return "<X25519Identity>"

    def shared(self, peer_public: bytes) -> bytes:
        if len(peer_public) != X25519_SIZE:
            raise PrimitiveError("X25519 keys must be 32 bytes")
        return _x25519(self._private, peer_public)


def x25519_shared(private: bytes, peer_public: bytes) -> bytes:
    """The X25519 shared secret; refuses the all-zero result of a low-order point."""
    if len(private) != X25519_SIZE or len(peer_public) != X25519_SIZE:
        raise PrimitiveError("X25519 keys must be 32 bytes")
    return _x25519(private, peer_public)


# --- Hashing, MAC, KDF ---------------------------------------------------------------


_SHA256 = _hashes.SHA256()  # an algorithm descriptor, without state: shared by every call


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=_SHA256, length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return _hmac.new(key, data, hashlib.sha256).digest()


def hmac_equal(a: bytes, b: bytes) -> bool:
    return _hmac.compare_digest(a, b)


def argon2id(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int, size: int = 32) -> bytes:
    if len(salt) != ARGON2ID_SALT_SIZE:
        raise PrimitiveError(f"Argon2id salt must be {ARGON2ID_SALT_SIZE} bytes")
    return bytes(_argon2id.kdf(size, passphrase, salt, opslimit=opslimit, memlimit=memlimit))


# --- XChaCha20-Poly1305 (key files at rest) ------------------------------------------

XCHACHA_NONCE_SIZE = 24


def xchacha20poly1305_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return bytes(_sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key))


def xchacha20poly1305_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return bytes(
            _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
        )
    except _nacl_exc.CryptoError as e:
        raise PrimitiveError("authentication failed") from e
