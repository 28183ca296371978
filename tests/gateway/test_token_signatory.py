"""A signatory's key on their own PKCS#11 token (SoftHSM2): usable only with the PIN the
signatory gives, for the one signature they ask for (agreement art. 4.4; issue 5)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.crypto import softhsm

REASON = softhsm.missing()
if REASON is not None:
    if softhsm.required():
        pytest.fail(f"ACCORD_REQUIRE_SOFTHSM=1 but {REASON}", pytrace=False)
    pytest.skip(REASON, allow_module_level=True)

from accord.crypto import VerifyKey  # noqa: E402
from accord.gateway.admin import home as _admin  # noqa: E402
from accord.gateway.admin.home import AdminError  # noqa: E402
from accord.gateway.keys.store import KeyStoreError, load_signatory  # noqa: E402
from accord.storage import get_key  # noqa: E402

from .test_admin import CHEAP, NOW, PARTY_A, make_node, open_db  # noqa: E402

USER = "Сидоров С.С."


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> softhsm.Token:
    module = softhsm.find_module()
    assert module is not None
    hsm = softhsm.SoftHsm(tmp_path / "softhsm", module)
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm.conf))
    # The node's environment never holds the signatory's PIN.
    monkeypatch.delenv("ACCORD_SIGNATORY_PASSPHRASE", raising=False)
    return hsm.init_token("signatory")


def _uri(token: softhsm.Token) -> str:
    return (
        f"pkcs11:token={quote(token.label, safe='')};object=head"
        f"?module-path={quote(token.module, safe='/')}&pin-source=env:ACCORD_SIGNATORY_PASSPHRASE"
    )


def test_token_signatory_signs_once_with_the_pin_and_never_without(tmp_path, token) -> None:
    node = make_node(tmp_path / "a", PARTY_A)
    pin = token.pin.encode()
    user = _admin.add_user(
        node.home, USER, role="signatory", signatory_passphrase=pin, now=NOW, kdf_cost=CHEAP,
        signatory_token_uri=_uri(token),
    )  # fmt: skip
    assert user.signatory_key_id is not None
    assert not node.home.signatory_key(USER).exists()  # nothing of the key in the home
    with open_db(node) as db:
        with db.session(readonly=True) as session:
            record = get_key(session, user.signatory_key_id)
            public = VerifyKey.from_dict(record.public)
        assert (record.store_ref or "").startswith("pkcs11:")
        assert "pin-value" not in (record.store_ref or "")
        signer = load_signatory(node.home, USER, pin, db=db)
        message = "Запрос подписан главой".encode()
        signature = signer.sign(message)
        assert public.verify(message, signature)
        # The PIN unlocked that one signature; the node cannot sign again with it.
        with pytest.raises(Exception):  # noqa: B017 - closed signer, any error
            signer.sign(message)
        # Neither the node's passphrase nor a guess opens it.
        for wrong in (node.passphrase, b"000000"):
            with pytest.raises(KeyStoreError, match="PIN"):
                load_signatory(node.home, USER, wrong, db=db)


def test_attack_token_uri_with_the_pin_inside_is_refused(tmp_path, token) -> None:
    node = make_node(tmp_path / "a", PARTY_A)
    with pytest.raises(AdminError, match="PIN"):
        _admin.add_user(
            node.home, USER, role="signatory", signatory_passphrase=token.pin.encode(),
            now=NOW, signatory_token_uri=token.uri("head"),
        )  # fmt: skip
