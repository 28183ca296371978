"""The primitive layer against the RFCs' own vectors and against a second implementation.

X25519 runs in libsodium; these tests pin it to RFC 7748 and to pyca/cryptography (OpenSSL),
which Accord used before, so that the change of library cannot change which keys agree or
which peer points are refused.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from crypto._primitives import (
    PrimitiveError,
    X25519Identity,
    x25519_public,
    x25519_public_and_shared,
    x25519_shared,
)

# RFC 7748 section 6.1.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

# Points of small order (and their non-canonical encodings): X25519 with any of them gives
# the all-zero secret, which age requires a recipient to refuse.
LOW_ORDER_POINTS = [
    bytes(32),  # 0
    bytes([1]) + bytes(31),  # 1
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes([0xEC]) + b"\xff" * 30 + b"\x7f",  # p - 1
    bytes([0xED]) + b"\xff" * 30 + b"\x7f",  # p
    bytes([0xEE]) + b"\xff" * 30 + b"\x7f",  # p + 1
]


def test_x25519_rfc7748_vectors() -> None:
    assert x25519_public(ALICE_PRIVATE) == ALICE_PUBLIC
    assert x25519_public(BOB_PRIVATE) == BOB_PUBLIC
    assert x25519_shared(ALICE_PRIVATE, BOB_PUBLIC) == SHARED
    assert x25519_public_and_shared(BOB_PRIVATE, ALICE_PUBLIC) == (BOB_PUBLIC, SHARED)
    identity = X25519Identity(ALICE_PRIVATE)
    assert identity.public == ALICE_PUBLIC
    assert identity.shared(BOB_PUBLIC) == SHARED


def test_x25519_agrees_with_openssl() -> None:
    for _ in range(64):
        private, peer = os.urandom(32), bytearray(os.urandom(32))
        # Half the peers have the top bit set, which RFC 7748 says to ignore.
        peer[31] |= 0x80 if peer[0] & 1 else 0
        theirs = X25519PrivateKey.from_private_bytes(private)
        assert x25519_public(private) == theirs.public_key().public_bytes_raw()
        expected = theirs.exchange(X25519PublicKey.from_public_bytes(bytes(peer)))
        assert x25519_shared(private, bytes(peer)) == expected


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_x25519_low_order_share_refused(point: bytes) -> None:
    # A share of small order forces the all-zero secret (a key no one chose): refused by
    # every entry point, as OpenSSL refuses it.
    with pytest.raises(PrimitiveError):
        x25519_shared(ALICE_PRIVATE, point)
    with pytest.raises(PrimitiveError):
        x25519_public_and_shared(ALICE_PRIVATE, point)
    with pytest.raises(PrimitiveError):
        X25519Identity(ALICE_PRIVATE).shared(point)
    with pytest.raises(ValueError):
        X25519PrivateKey.from_private_bytes(ALICE_PRIVATE).exchange(
            X25519PublicKey.from_public_bytes(point)
        )


@pytest.mark.parametrize("size", [0, 31, 33])
def test_x25519_wrong_length_refused(size: int) -> None:
    with pytest.raises(PrimitiveError):
        x25519_shared(ALICE_PRIVATE, bytes(size))
    with pytest.raises(PrimitiveError):
        x25519_shared(bytes(size), BOB_PUBLIC)
    with pytest.raises(PrimitiveError):
        x25519_public(bytes(size))
    with pytest.raises(PrimitiveError):
        X25519Identity(bytes(size))
    with pytest.raises(PrimitiveError):
        X25519Identity(ALICE_PRIVATE).shared(bytes(size))
