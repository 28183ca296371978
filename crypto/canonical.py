"""Canonical JSON (RFC 8785, JCS): the one serialisation of every signed payload.

Invariants:
- `dumps` is deterministic: the same object always gives the same bytes, on every node
  and in every auditor's tool, so digests are reproducible.
- `loads_canonical` accepts only bytes that are already canonical (no duplicate keys, no
  whitespace, sorted keys, canonical numbers and escapes), so a signed payload has exactly
  one byte form and parsing it cannot hide a second interpretation.
"""

from __future__ import annotations

import json
import json.encoder
import re
from collections.abc import Callable
from typing import Any

import rfc8785

from .errors import VerificationError

__all__ = ["canonical_ascii_strings", "canonical_string", "dumps", "loads_canonical"]


_MAX_SAFE_INTEGER = 2**53 - 1


def dumps(obj: Any) -> bytes:
    """Serialise `obj` with RFC 8785. Floats are refused: Accord's payloads use integers.

    For the values Accord signs (objects, arrays, strings, integers within +-(2**53 - 1),
    booleans, null) the standard library's compact, key-sorted JSON without ASCII escaping
    *is* the RFC 8785 form, except that JCS orders keys by UTF-16 code units: the two orders
    differ only for keys with characters beyond the Basic Multilingual Plane, which go to
    the `rfc8785` library. `tests/crypto/test_canonical.py` checks the equivalence against
    that library on generated values; the fast path is what makes signing cheap.
    """
    if not _fast_path_ok(obj):
        try:
            return bytes(rfc8785.dumps(obj))
        except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
            raise ValueError(f"cannot serialise canonically: {e}") from e
    return _stdlib_dumps(obj)


def canonical_string(text: str) -> str:
    """A string as `dumps` writes it, quotes included (the encoder's own escaping:
    RFC 8785 escapes only '"', '\\' and control characters). For a caller that writes an
    object of known keys around canonical values; the result is encoded to UTF-8 by the
    caller, which refuses a lone surrogate as `dumps` does."""
    return _encode_string(text)


def canonical_ascii_strings(obj: dict[str, Any]) -> bytes:
    """`dumps` for a value whose caller has checked it holds only objects, arrays and
    ASCII strings (an envelope's wire form): for such a value the standard library's
    compact, key-sorted form is the RFC 8785 form, so the type walk is skipped.
    `tests/crypto/test_canonical.py` checks both agree."""
    return _stdlib_dumps(obj)


# Built once: `json.dumps` and `json.loads` with options build a new coder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
# The string encoder `_ENCODER` uses (ensure_ascii=False): C, when the stdlib has it.
_encode_string: Callable[[str], str] = json.encoder.encode_basestring


def _stdlib_dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode("utf-8")


def _fast_path_ok(obj: Any) -> bool:
    """True when `obj` holds only values whose stdlib JSON form is their JCS form; raises
    for values no signed payload may hold (floats, integers outside the safe range)."""
    ok = True
    stack = [obj]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str or value is None or kind is bool:
            continue
        if kind is int:
            if not -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
                raise ValueError(f"integer {value} is outside the interoperable range of JSON")
        elif kind is dict:
            for key in value:
                if type(key) is not str:
                    raise ValueError("object keys must be strings")
                if not key.isascii() and max(key) > "\uffff":
                    ok = False
            stack.extend(value.values())
        elif kind is list or kind is tuple:
            stack.extend(value)
        elif isinstance(value, float):
            raise ValueError("floats are not allowed in signed payloads")
        elif isinstance(value, str | int):
            # Subclasses (a StrEnum, an IntEnum) are checked as their base type.
            stack.append(str(value) if isinstance(value, str) else int(value))
        else:
            raise ValueError(f"cannot serialise {kind.__name__} in a signed payload")
    return ok


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise VerificationError(f"duplicate key {key!r} in JSON")
        result[key] = value
    return result


def _no_floats(text: str) -> Any:
    raise VerificationError(f"non-integer number {text!r} in JSON")


def _safe_int(text: str) -> int:
    value = int(text)
    if not -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
        raise VerificationError(f"integer {text} is outside the interoperable range of JSON")
    return value


_DECODER = json.JSONDecoder(parse_float=_no_floats, parse_int=_safe_int, parse_constant=_no_floats)

# A character beyond the Basic Multilingual Plane starts with one of these bytes in UTF-8;
# without one, the parsed keys sort the same by code point and by UTF-16 code unit.
_BEYOND_BMP = re.compile(b"[\xf0-\xf4]")


def loads_canonical(data: bytes) -> Any:
    """Parse bytes that must be canonical JSON; raise `VerificationError` otherwise.

    The proof is a round trip: the parsed value, serialised again, must give `data` back.
    A duplicate key, whitespace, an unsorted key or a non-canonical number or escape all
    make the round trip differ. Parsing refuses floats and integers outside the
    interoperable range as it meets them, so the parsed value holds only what the stdlib
    writes in RFC 8785 form; `dumps` (and its type walk) is needed only when a key could
    sort differently by UTF-16 code units.
    """
    try:
        obj = _DECODER.decode(data.decode("utf-8"))
    except VerificationError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VerificationError(f"malformed JSON: {e}") from e
    except RecursionError as e:
        # Arrays or objects nested deeper than the interpreter's recursion limit: no
        # statement of ours nests more than a few levels.
        raise VerificationError("malformed JSON: nested too deeply") from e
    try:
        # A lone surrogate escape parses but cannot be written as UTF-8 (a ValueError).
        plain = data.isascii() or _BEYOND_BMP.search(data) is None
        canonical = _stdlib_dumps(obj) if plain else dumps(obj)
    except (ValueError, RecursionError) as e:
        raise VerificationError(f"JSON cannot be canonical: {e}") from e
    if canonical != data:
        # Name the usual culprit; the slow parse runs only for refused input.
        json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
        raise VerificationError("JSON is not in canonical (RFC 8785) form")
    return obj
