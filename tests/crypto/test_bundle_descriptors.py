"""Which descriptors an auditor may pass (issue 12): a Party's descriptor of the time
together with its current one, linked by the bundle's key changes, is accepted; two that
nothing links are refused with words that say what to do."""

from __future__ import annotations

from datetime import timedelta

import pytest

from accord.crypto.bundle import BundleVerificationError, verify_bundle
from accord.crypto.keys import SigningKey

from .conftest import NOW, Party
from .test_bundle import descriptor
from .test_bundle_consent import world
from .test_bundle_rotation import _after_rotation, _rotation


def test_old_and_new_descriptor_of_a_rotated_party_both_passed_verify(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, forward=True)
    new = SigningKey.generate()
    change = _rotation(party_b, new, effective=NOW + timedelta(days=1))
    data, trusted = _after_rotation(w, party_b, new, (change,))
    for both in ([*trusted, descriptor(party_b)], [descriptor(party_b), *trusted]):
        evidence = verify_bundle(data, both)
        assert any(f"{party_b.party_id} signed a receipt" in p for p in evidence.proven)
        assert any(
            f"2 descriptors of {party_b.party_id}" in w and new.key_id[:16] in w
            for w in evidence.warnings
        )


def test_attack_two_unlinked_descriptors_of_one_party_are_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, forward=True)
    new = SigningKey.generate()
    data, trusted = _after_rotation(w, party_b, new, ())  # no rotation statement carried
    with pytest.raises(BundleVerificationError) as refused:
        verify_bundle(data, [*trusted, descriptor(party_b)])
    (failure,) = refused.value.failures
    assert f"2 descriptors of {party_b.party_id}" in failure and "no key change" in failure
