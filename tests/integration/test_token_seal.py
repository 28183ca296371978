"""A node whose seal lives on a PKCS#11 token (SoftHSM2) exchanges with another real node.

Node A's admin moves A's seal onto a SoftHSM2 token with `accord keys rotate --key seal
--token-uri ...` (the key is generated on the token and never leaves it; the PIN comes
from an environment variable). A then runs as a real `accord serve` process that signs
every message and receipt on the token, and node B verifies them end to end (DESIGN 8).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import SimpleNamespace
from urllib.parse import quote

import pytest

from accord.crypto import Envelope, VerifyKey, verify_receipt
from accord.crypto.descriptor import format_fingerprint
from accord.crypto.rotation import RotatedKind
from accord.gateway.admin.home import export_descriptor, read_descriptor
from accord.gateway.keys import lifecycle as _keys
from accord.storage import KeyKind, KeyStatus, get_key, get_message, get_receipt
from accord.storage import list_keys as stored_keys
from tests.crypto import softhsm
from tests.integration._nodes import KDF, NODE_PASSPHRASE, Cluster, _now

pytestmark = pytest.mark.integration

REASON = softhsm.missing()
if REASON is not None:
    if softhsm.required():
        pytest.fail(f"ACCORD_REQUIRE_SOFTHSM=1 but {REASON}", pytrace=False)
    pytest.skip(REASON, allow_module_level=True)

PIN_VAR = "ACCORD_TEST_SEAL_PIN"


@pytest.fixture(scope="module")
def token_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[softhsm.Token]:
    """A SoftHSM2 token; SOFTHSM2_CONF and the PIN variable are set for this process and
    the node processes it starts (they inherit the environment)."""
    module = softhsm.find_module()
    assert module is not None
    hsm = softhsm.SoftHsm(tmp_path_factory.mktemp("softhsm"), module)
    saved = {k: os.environ.get(k) for k in ("SOFTHSM2_CONF", PIN_VAR)}
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    token = hsm.init_token("accord-seal")
    os.environ[PIN_VAR] = token.pin
    try:
        yield token
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def token_uri(token: softhsm.Token, label: str) -> str:
    return (
        f"pkcs11:token={quote(token.label, safe='')};object={quote(label, safe='')}"
        f"?module-path={quote(token.module, safe='/')}&pin-source=env:{PIN_VAR}"
    )


@pytest.fixture(scope="module")
def nodes(cluster_factory: Callable[[], Cluster], token_env: softhsm.Token) -> SimpleNamespace:
    cluster = cluster_factory()
    a, b = cluster.add("МВД-РБ", "Росгвардия")
    a.add_user("оператор", role="operator", clearance="CONFIDENTIAL")
    b.add_user("оператор Б", role="operator", clearance="CONFIDENTIAL")
    # The seal moves onto the token before the descriptors are exchanged, so B onboards A
    # with the token seal (a rotation later would be announced like any other).
    rotated = _keys.rotate(
        a.home,
        "seal",
        passphrase=NODE_PASSPHRASE.encode(),
        now=_now(),
        kdf_cost=KDF,
        token_uri=token_uri(token_env, f"печать-{cluster.root.name}"[:30]),
    )
    # The fingerprint covers the seal: B's admin compares the new one out of band.
    descriptor = export_descriptor(a.home, NODE_PASSPHRASE.encode(), _now())
    a.init = replace(
        a.init, fingerprint=format_fingerprint(read_descriptor(descriptor).fingerprint)
    )
    cluster.connect()
    cluster.start()
    return SimpleNamespace(a=a, b=b, cluster=cluster, rotated=rotated)


def test_token_seal_signs_messages_and_receipts_end_to_end(nodes: SimpleNamespace) -> None:
    a, b, rotated = nodes.a, nodes.b, nodes.rotated
    assert rotated.kind is RotatedKind.SEAL
    # Nothing of the token key is in the home: only its URI, without the PIN.
    reference = (a.home.seal_key.parent / "seal.pkcs11").read_text("utf-8")
    assert reference.startswith("pkcs11:") and "pin-value" not in reference
    assert not a.home.seal_key.exists()
    with a.database() as db, db.session(readonly=True) as session:
        seals = {k.key_id: k for k in stored_keys(session, owner=a.party, kind=KeyKind.SEAL)}
    assert seals[rotated.new_key_id].status is KeyStatus.ACTIVE
    assert (seals[rotated.new_key_id].store_ref or "").startswith("pkcs11:")

    sent = a.send("оператор", to=b, body="Печать на токене", purpose="проверка токена")
    assert sent.status_code == 201, sent.text
    message_id = sent.json()["message_id"]
    a.wait_for_status(message_id, "delivered")
    with b.database() as db, db.session(readonly=True) as session:
        envelope = Envelope.from_bytes(get_message(session, message_id).envelope)
    assert rotated.new_key_id in {s.keyid for s in envelope.signatures}

    # B answers; A's receipt for it is signed on the token and verifies at B.
    back = b.send("оператор Б", to=a, body="Ответ", purpose="проверка токена")
    assert back.status_code == 201, back.text
    back_id = back.json()["message_id"]
    b.wait_for_status(back_id, "delivered")
    with b.database() as db, db.session(readonly=True) as session:
        receipt = Envelope.from_bytes(get_receipt(session, back_id).envelope)
        statement_sha256 = Envelope.from_bytes(
            get_message(session, back_id).envelope
        ).payload_sha256
        token_seal = VerifyKey.from_dict(get_key(session, rotated.new_key_id).public)
    evidence = verify_receipt(
        receipt, [token_seal], receiver=a.party, message_id=back_id,
        statement_sha256=statement_sha256,
    )  # fmt: skip
    assert evidence.evidence.key_ids == {rotated.new_key_id}
