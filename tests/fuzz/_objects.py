"""Generators of valid Accord objects for the fuzz properties, and the checks that say an
object parsed from bytes is fully valid.

Keys are fixed (derived from constant seeds), so a failing example replays exactly; the
strategies build every statement kind from its fields, never by mutating a sample, so the
round-trip properties cover the whole space of valid values, Cyrillic included (art. 9).
The validity checks here are written independently of the parsers (`re.fullmatch` on the
documented forms), so a parser that lets a malformed field through is caught.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from accord.crypto import DecryptionKey, Envelope, SigningKey
from accord.crypto.envelope import Signature

__all__ = [
    "KEYS",
    "RECIPIENT",
    "assert_valid_envelope",
    "digests",
    "idents",
    "is_hex64",
    "is_ident",
    "json_objects",
    "markings",
    "mutations",
    "texts",
    "times",
]

KEYS = [SigningKey(bytes([i]) * 32) for i in range(1, 5)]
RECIPIENT = DecryptionKey(bytes([0x42]) * 32)

_IDENT_ALPHABET = "abcxyzABCXYZ0189-_.:@МВДРБжэюё№"
idents = st.text(alphabet=_IDENT_ALPHABET, min_size=1, max_size=24)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
digests = st.binary(min_size=32, max_size=32).map(bytes.hex)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=0))
_LEVELS = st.sampled_from(["OFFICIAL", "RESTRICTED", "CONFIDENTIAL", "TLP:AMBER"])
markings = st.fixed_dictionaries(
    {"level": _LEVELS, "caveats": st.lists(st.sampled_from(["ORCON", "NOFORN", "ПДн"]))}
)
_json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | texts
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=8,
)
json_objects = st.dictionaries(texts, json_values, max_size=5)
payload_types = st.from_regex(r"[\x21-\x7e][\x20-\x7e]{0,40}", fullmatch=True)


def lifetimes(minimum: int = 1) -> st.SearchStrategy[timedelta]:
    return st.integers(min_value=minimum, max_value=10 * 365 * 86400).map(
        lambda s: timedelta(seconds=s)
    )


@st.composite
def envelopes(draw: st.DrawFn, max_signatures: int = 16) -> Envelope:
    """A well-formed envelope: any payload bytes, 1 to 16 structurally valid signatures."""
    keyids = draw(st.lists(digests, min_size=1, max_size=max_signatures, unique=True))
    sigs = [Signature(k, draw(st.binary(min_size=64, max_size=64))) for k in keyids]
    return Envelope(draw(payload_types), draw(st.binary(max_size=200)), tuple(sigs))


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` changed in one of the ways an attacker or a bad line would: a byte flipped,
    bytes cut, inserted or duplicated, the tail dropped. Never equal to `data`."""
    kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
    at = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
    if kind == "flip" and data:
        out = bytearray(data)
        out[at] ^= draw(st.integers(min_value=1, max_value=255))
        return bytes(out)
    if kind == "delete" and data:
        n = draw(st.integers(min_value=1, max_value=max(1, min(8, len(data) - at))))
        return data[:at] + data[at + n :]
    if kind == "truncate" and data:
        return data[:at]
    if kind == "duplicate" and data:
        n = draw(st.integers(min_value=1, max_value=8))
        return data[:at] + data[at : at + n] * 2 + data[at + n :]
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


_IDENT = re.compile(r"[^\x00-\x20\x7f/\\]{1,128}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PAYLOAD_TYPE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")


def is_ident(value: Any) -> bool:
    return isinstance(value, str) and _IDENT.fullmatch(value) is not None


def is_hex64(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def assert_valid_envelope(envelope: Envelope) -> None:
    """What `Envelope` promises of every instance, checked from outside."""
    assert _PAYLOAD_TYPE.fullmatch(envelope.payload_type), envelope.payload_type
    assert 1 <= len(envelope.signatures) <= 16
    assert len({s.keyid for s in envelope.signatures}) == len(envelope.signatures)
    for s in envelope.signatures:
        assert is_hex64(s.keyid), s.keyid
        assert len(s.sig) == 64
