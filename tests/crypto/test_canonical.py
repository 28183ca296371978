"""Canonical JSON: Accord's fast path equals the rfc8785 library on every value it signs."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.crypto import VerificationError, canonical_json
from accord.crypto.canonical import loads_canonical

SAFE = 2**53 - 1
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-SAFE, SAFE) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_fast_path_equals_rfc8785(value) -> None:
    try:
        expected = rfc8785.dumps(value)
    except UnicodeEncodeError:  # lone surrogates cannot be UTF-8 at all
        with pytest.raises(ValueError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected
    assert loads_canonical(expected) == value


def test_keys_beyond_the_bmp_sort_by_utf16_code_units() -> None:
    # U+1F600 sorts before U+FF61 in UTF-16 (its high surrogate is 0xD83D), after it by code
    # point: the one case where Python's sort differs from JCS.
    value = {"\U0001f600": 1, "\uff61": 2}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json(value).index("\U0001f600".encode()) < canonical_json(value).index(
        "\uff61".encode()
    )


@pytest.mark.parametrize("value", [1.5, 2**53, -(2**53), {"x": [0.0]}, {1: "a"}, object()])
def test_values_no_signed_payload_may_hold_are_refused(value) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)


@pytest.mark.parametrize(
    "data",
    [b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.0}', b'{"a":1,"a":1}', b'{"a":"\\u0041"}', b"\xff"],
)
def test_non_canonical_bytes_refused(data) -> None:
    with pytest.raises(VerificationError):
        loads_canonical(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":"\\ud800"}',  # a lone surrogate escape parses but has no UTF-8 form
        b"[9007199254740992]",  # beyond the interoperable integer range
        b"[-0]",
        b'{"\xef\xbd\xa1":1,"\xf0\x9f\x98\x80":2}',  # code-point order, not UTF-16 order
        b'{"\\ud83d\\ude00":1}',  # an escaped character that canonical JSON writes raw
    ],
)
def test_non_canonical_edge_cases_refused(data) -> None:
    with pytest.raises(VerificationError):
        loads_canonical(data)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=0), st.binary(min_size=1, max_size=2))
def test_any_edit_of_canonical_bytes_is_refused_or_canonical(value, where, insert) -> None:
    """A spliced-in byte either leaves bytes that are some value's RFC 8785 form, and then
    parse to that value, or is refused: never a second reading of the same bytes."""
    try:
        canonical = rfc8785.dumps(value)
    except UnicodeEncodeError:
        return
    at = where % (len(canonical) + 1)
    edited = canonical[:at] + insert + canonical[at:]
    try:
        parsed = loads_canonical(edited)
    except VerificationError:
        return
    assert rfc8785.dumps(parsed) == edited


ascii_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
ascii_values = st.recursive(
    ascii_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ascii_text, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(ascii_text, ascii_values, max_size=5))
def test_ascii_strings_shortcut_equals_rfc8785(value) -> None:
    """The envelope's shortcut (no type walk) gives the RFC 8785 bytes for every value of
    the shape it is used for: objects, arrays and printable ASCII strings."""
    from accord.crypto.canonical import canonical_ascii_strings

    assert canonical_ascii_strings(value) == rfc8785.dumps(value)
