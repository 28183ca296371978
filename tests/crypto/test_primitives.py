"""The primitive layer against the RFCs' own vectors and against a second implementation.

X25519 runs in libsodium; these tests pin it to RFC 7748 and to pyca/cryptography (OpenSSL),
which Accord used before, so that the change of library cannot change which keys agree or
which peer points are refused. HMAC-SHA-256 and HKDF-SHA-256 are pinned to RFC 4231 and
RFC 5869, whichever implementation is behind them.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from accord.crypto._primitives import (
    PrimitiveError,
    X25519Identity,
    hkdf_sha256,
    hmac_sha256,
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


# RFC 4231 test cases 1, 2 and 6 (a key longer than the block is hashed first).
HMAC_VECTORS = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
]

# RFC 5869 test cases 1 to 3 (SHA-256): several output blocks, long inputs, empty salt.
HKDF_VECTORS = [
    (
        b"\x0b" * 22,
        bytes(range(13)),
        bytes(range(0xF0, 0xFA)),
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        b"\x0b" * 22,
        b"",
        b"",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("key", "data", "expected"), HMAC_VECTORS)
def test_hmac_sha256_rfc4231_vectors(key: bytes, data: bytes, expected: str) -> None:
    assert hmac_sha256(key, data).hex() == expected


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "expected"), HKDF_VECTORS)
def test_hkdf_sha256_rfc5869_vectors(
    ikm: bytes, salt: bytes, info: bytes, length: int, expected: str
) -> None:
    assert hkdf_sha256(ikm, salt, info, length).hex() == expected
