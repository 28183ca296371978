"""A bundle proves it holds every log entry about its message (issue 12).

Each version 2 event about a message names the previous event about it in the same log
(`LogEvent.prev`), and the export's own entry ends the chain: an entry left out of a
bundle, or a receipt the log records as stored, is a failure. Bundles of the first
format (unchained) still verify, with the weaker claim stated as a warning.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from accord.crypto import VerificationError
from accord.crypto.bundle import Bundle, BundleVerificationError, LogEvent, verify_bundle
from accord.crypto.canonical import dumps, loads_canonical

from .conftest import NOW, Party
from .test_bundle import Made, make_bundle


def _failures(made: Made, bundle: Bundle) -> tuple[str, ...]:
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(bundle.to_bytes(), made.trusted)
    return caught.value.failures


def _kinds(bundle: Bundle) -> list[str]:
    return [LogEvent.from_leaf(e.leaf).kind for e in bundle.entries]


def _drop(bundle: Bundle, kind: str) -> Bundle:
    kept = tuple(e for e in bundle.entries if LogEvent.from_leaf(e.leaf).kind != kind)
    assert len(kept) < len(bundle.entries)
    return dataclasses.replace(bundle, entries=kept)


def test_whole_bundle_proves_no_entry_was_left_out(party_a: Party, party_b: Party) -> None:
    made = make_bundle(party_a, party_b)
    assert _kinds(made.bundle) == ["message.sent", "receipt.stored", "bundle.exported"]
    evidence = verify_bundle(made.data, made.trusted)
    assert any("every entry of" in p and "none was left out" in p for p in evidence.proven)


def test_bundle_with_receipt_entry_removed_fails(party_a: Party, party_b: Party) -> None:
    made = make_bundle(party_a, party_b)
    cut = _drop(made.bundle, "receipt.stored")
    assert any("log entry 3" in f and "left out" in f for f in _failures(made, cut))


def test_bundle_with_receipt_envelope_removed_fails(party_a: Party, party_b: Party) -> None:
    made = make_bundle(party_a, party_b)
    cut = dataclasses.replace(made.bundle, receipts=())
    found = _failures(made, cut)
    assert any("receipt that log entry 3 records" in f and "left out" in f for f in found)


def test_bundle_with_first_entry_removed_fails(party_a: Party, party_b: Party) -> None:
    made = make_bundle(party_a, party_b)
    cut = _drop(made.bundle, "message.sent")
    assert any("log entry 1" in f and "left out" in f for f in _failures(made, cut))


def test_bundle_with_export_entry_removed_fails(party_a: Party, party_b: Party) -> None:
    """Without its export entry the chain has no end: whatever came after the last
    entry kept could have been left out."""
    made = make_bundle(party_a, party_b)
    cut = _drop(made.bundle, "bundle.exported")
    found = _failures(made, cut)
    assert any("not the entry of the bundle's export" in f for f in found)


def test_first_format_bundle_verifies_with_the_weaker_claim(party_a: Party, party_b: Party) -> None:
    made = make_bundle(party_a, party_b, legacy=True)
    evidence = verify_bundle(made.data, made.trusted)
    assert not any("none was left out" in p for p in evidence.proven)
    assert any("first format" in w and "left out" in w for w in evidence.warnings)


def test_event_prev_round_trips_and_only_in_version_2() -> None:
    event = LogEvent("message.read", NOW, "A", message_id="m", chained=True, prev=7)
    assert LogEvent.from_leaf(event.to_leaf()) == event
    payload = loads_canonical(event.to_leaf())
    assert isinstance(payload, dict) and payload["v"] == 2 and payload["prev"] == 7
    with pytest.raises(VerificationError, match="prev"):
        LogEvent.from_leaf(dumps({**payload, "v": 1}))
    with pytest.raises(ValueError, match="prev"):
        LogEvent("message.read", NOW + timedelta(1), "A", message_id="m", prev=7)
    with pytest.raises(ValueError, match="prev"):
        LogEvent("user.added", NOW, "A", chained=True, prev=1)
