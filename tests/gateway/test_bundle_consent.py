"""Evidence bundles of consented messages, end to end (agreement art. 7.2, 7.3; issue 6).

Three nodes' real code in one process (tests/gateway/test_forward.py's world: A
originates, B receives and forwards, C is the third party). Each node exports the bundle
of the message, and the bundle is verified offline with `crypto/` alone against the three
Parties' descriptors, as an auditor would with `accord verify`: the consent tokens, the
originator's revocation and the forward statement recorded for the message travel in it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accord.crypto import Envelope
from accord.crypto.bundle import Bundle, BundleVerificationError, verify_bundle
from accord.crypto.descriptor import NodeDescriptor, verify_descriptor
from accord.gateway.admin import home as _admin
from accord.gateway.audit import log as _audit
from accord.gateway.cli import app
from accord.gateway.consent.control import revoke_consent

from . import test_forward
from .test_forward import (
    PASS,
    PURPOSE,
    START,
    A,
    B,
    C,
    World,
    deliver,
    forward,
    grant,
    send,
)

homes = test_forward.homes  # the three nodes' fixtures
world = test_forward.world


def trusted(w: World) -> list[NodeDescriptor]:
    return [
        verify_descriptor(Envelope.from_bytes(_admin.export_descriptor(n.home, PASS, START)))
        for n in (w.a, w.b, w.c)
    ]


def test_forwarders_bundle_carries_the_consent_and_forward_and_verifies_offline(
    world: World,
) -> None:
    """Art. 7.3: B's bundle proves A consented to the transfer to C, and that B made it."""
    message_id = send(world)
    nonce = grant(world, message_id)
    forward(world, message_id)
    data = _audit.export_bundle(world.b, message_id, user="аудитор")
    bundle = Bundle.from_bytes(data)
    assert len(bundle.consent_tokens) == 1 and len(bundle.forwards) == 1
    assert bundle.revocations == ()
    evidence = verify_bundle(data, trusted(world))
    text = "\n".join(evidence.proven)
    assert f"Consent {nonce[:16]}… was signed by the seal of {A}" in text
    assert f"{B} may pass message {message_id} to the third party {C}" in text
    assert f"«{PURPOSE}»" in text
    assert f"{B} sealed that it passed message {message_id}" in text
    assert "Протокол допроса".encode() not in data  # no content


def test_third_partys_bundle_proves_its_receipt_from_the_forwarder(world: World) -> None:
    message_id = send(world)
    grant(world, message_id)
    forward(world, message_id)
    data = _audit.export_bundle(world.c, message_id, user="аудитор")
    evidence = verify_bundle(data, trusted(world))
    text = "\n".join(evidence.proven)
    assert f"{C} signed a receipt: it received message {message_id} from {B}" in text
    assert f"passed message {message_id} (unchanged" in text


def test_originators_bundle_carries_the_revocation(world: World) -> None:
    message_id = send(world)
    nonce = grant(world, message_id)
    revoked = revoke_consent(world.a, world.users[A], nonce)
    assert deliver(world.a, world.b, revoked["sent_as"]) == "accepted"
    for node in (world.a, world.b):
        data = _audit.export_bundle(node, message_id, user="аудитор")
        assert len(Bundle.from_bytes(data).revocations) == 1
        proven = verify_bundle(data, trusted(world)).proven
        assert any(p.startswith(f"{A} revoked consent {nonce[:16]}") for p in proven)


def test_attack_consent_token_swapped_for_one_of_another_message_fails_verify(
    world: World,
) -> None:
    first, second = send(world), send(world)
    grant(world, first)
    grant(world, second)
    one = Bundle.from_bytes(_audit.export_bundle(world.b, first, user="аудитор"))
    other = Bundle.from_bytes(_audit.export_bundle(world.b, second, user="аудитор"))
    swapped = Bundle(**{**one.__dict__, "consent_tokens": other.consent_tokens}).to_bytes()
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(swapped, trusted(world))
    assert any("another message" in f for f in caught.value.failures)


def test_accord_verify_checks_the_consent_by_default(world: World, tmp_path: Path) -> None:
    message_id = send(world)
    grant(world, message_id)
    forward(world, message_id)
    bundle = tmp_path / "связка.json"
    bundle.write_bytes(_audit.export_bundle(world.b, message_id, user="аудитор"))
    args = ["verify", str(bundle), "--json"]
    for n in (world.a, world.b, world.c):
        path = tmp_path / f"{n.party}.descriptor"
        path.write_bytes(_admin.export_descriptor(n.home, PASS, START))
        args += ["--trust", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    assert any(p.startswith("Consent ") and f"third party {C}" in p for p in report["proven"])
