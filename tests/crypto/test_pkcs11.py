"""Ed25519 keys on a PKCS#11 token (SoftHSM2): generation, signing, refusals.

Each test gets a fresh SoftHSM2 installation in its temporary directory. The signatures
the token makes are checked by the same verifiers as software keys: `VerifyKey.verify`
(libsodium, strict rule), `verify_envelope` and `verify_message`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from . import softhsm

REASON = softhsm.missing()
if REASON is not None:
    if softhsm.required():
        pytest.fail(f"ACCORD_REQUIRE_SOFTHSM=1 but {REASON}", pytrace=False)
    pytest.skip(REASON, allow_module_level=True)

import pkcs11  # noqa: E402
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass  # noqa: E402

from accord.crypto import (  # noqa: E402
    Envelope,
    Signer,
    SigningError,
    SigningKey,
    VerificationError,
    sign_envelope,
    verify_envelope,
    verify_message,
)
from accord.crypto.errors import KeyFileError  # noqa: E402
from accord.crypto.pkcs11 import Pkcs11Signer, Pkcs11Uri, TokenError, generate_token_key  # noqa: E402
from accord.crypto.tls import TlsIdentity, server_context  # noqa: E402

from .conftest import NOW, send  # noqa: E402

TEST_TYPE = "application/vnd.accord.test.v1+json"
MESSAGE = "Запрос о содействии № 17/2026".encode()


@pytest.fixture
def hsm(tmp_path, monkeypatch) -> softhsm.SoftHsm:
    module = softhsm.find_module()
    assert module is not None
    hsm = softhsm.SoftHsm(tmp_path / "softhsm", module)
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm.conf))
    return hsm


@pytest.fixture
def token(hsm) -> softhsm.Token:
    return hsm.init_token("accord-node")


@pytest.fixture
def seal_uri(token) -> str:
    uri = token.uri("seal")
    generate_token_key(uri)
    return uri


@pytest.fixture
def signer(seal_uri) -> Iterator[Pkcs11Signer]:
    with Pkcs11Signer.open(seal_uri) as s:
        yield s


def flip(data: bytes, bit: int = 0) -> bytes:
    return data[: bit // 8] + bytes([data[bit // 8] ^ (1 << bit % 8)]) + data[bit // 8 + 1 :]


def raw_session(token: softhsm.Token, *, rw: bool = False, login: bool = True) -> pkcs11.Session:
    """A session of the test's own, outside `crypto.pkcs11`, to inspect or tamper.

    Without `login` it shares the login of a signer open on the token.
    """
    found = pkcs11.lib(token.module).get_token(token_label=token.label)
    return found.open(rw=rw, user_pin=token.pin if login else None)


# --- Generation and signing ----------------------------------------------------------


def test_generate_on_fresh_token_returns_its_public_key(token) -> None:
    uri = token.uri("seal")
    public = generate_token_key(uri)
    with Pkcs11Signer.open(uri) as signer:
        assert signer.verify_key() == public
        assert signer.key_id == public.key_id
        assert isinstance(signer, Signer)


def test_token_signature_verifies_with_libsodium(signer) -> None:
    signature = signer.sign(MESSAGE)
    assert len(signature) == 64
    assert signer.verify_key().verify(MESSAGE, signature)
    assert not signer.verify_key().verify(flip(MESSAGE), signature)
    assert not signer.verify_key().verify(MESSAGE, flip(signature, 511))


def test_envelope_signed_on_token_verifies_offline(signer) -> None:
    envelope = sign_envelope(TEST_TYPE, {"text": "подписано на токене", "n": 1}, [signer])
    # The auditor has only the envelope's bytes and the public key.
    received = Envelope.from_bytes(envelope.to_bytes())
    evidence = verify_envelope(
        received, [signer.verify_key()], payload_type=TEST_TYPE, required=[signer.key_id]
    )
    assert evidence.key_ids == {signer.key_id}
    assert evidence.statement["text"] == "подписано на токене"


def test_envelope_signed_on_token_with_altered_payload_refused(signer) -> None:
    envelope = sign_envelope(TEST_TYPE, {"n": 1}, [signer])
    forged = Envelope(TEST_TYPE, b'{"n":2}', envelope.signatures)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_envelope(forged, [signer.verify_key()], payload_type=TEST_TYPE)


def test_sealed_message_signed_by_token_verifies(hsm, party_a, party_b) -> None:
    # A request: the signatory's key on a smart card, the node's seal on the HSM.
    token = hsm.init_token("accord-node")
    for label in ("seal", "signatory"):
        generate_token_key(token.uri(label))
    sent = send(party_a, party_b, [b"attachment"])
    with (
        Pkcs11Signer.open(token.uri("seal")) as seal,
        Pkcs11Signer.open(token.uri("signatory")) as signatory,
    ):
        envelope = sent.sealed.sign([signatory, seal])
        keys = [seal.verify_key(), signatory.verify_key()]
        required = [seal.key_id, signatory.key_id]
    verified = verify_message(
        Envelope.from_bytes(envelope.to_bytes()),
        keys,
        sender=party_a.party_id,
        recipient=party_b.party_id,
        now=NOW,
        required=required,
    )
    assert verified.evidence.key_ids == set(required)
    assert verified.statement.message_id == sent.sealed.statement.message_id


def test_token_and_software_signatures_follow_the_same_rule(signer) -> None:
    # One verifier (libsodium's strict rule, docs/adr/0002) for every signer; the rule
    # itself is pinned by tests/crypto/test_ed25519_vectors.py.
    software = SigningKey.generate()
    for s in (signer, software):
        signature = s.sign(MESSAGE)
        assert s.verify_key().verify(MESSAGE, signature)
        assert not s.verify_key().verify(MESSAGE, flip(signature, 3))
        assert not s.verify_key().verify(MESSAGE, flip(signature, 260))
        assert not s.verify_key().verify(flip(MESSAGE, 9), signature)
    assert not software.verify_key().verify(MESSAGE, signer.sign(MESSAGE))
    assert not signer.verify_key().verify(MESSAGE, software.sign(MESSAGE))


def test_key_id_stable_across_reopen(seal_uri) -> None:
    with Pkcs11Signer.open(seal_uri) as first:
        key_id = first.key_id
        signature = first.sign(MESSAGE)
    with Pkcs11Signer.open(seal_uri, expected_key_id=key_id) as second:
        assert second.key_id == key_id
        # Ed25519 is deterministic: the same key signs the same bytes the same way.
        assert second.sign(MESSAGE) == signature


def test_signer_shared_between_threads(signer) -> None:
    messages = [MESSAGE + str(i).encode() for i in range(64)]
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        results[i] = signer.sign(messages[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(messages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(signer.verify_key().verify(messages[i], results[i]) for i in range(64))


def test_closing_one_signer_keeps_the_others_logged_in(hsm) -> None:
    # PKCS#11 login is per token and application: closing the signatory's session must
    # not log out the seal that shares the token.
    token = hsm.init_token("accord-node")
    generate_token_key(token.uri("seal"))
    generate_token_key(token.uri("signatory"))
    with Pkcs11Signer.open(token.uri("seal")) as seal:
        with Pkcs11Signer.open(token.uri("signatory")) as signatory:
            signatory.sign(MESSAGE)
        assert seal.verify_key().verify(MESSAGE, seal.sign(MESSAGE))
        # And the login ended with the last signer: a fresh open logs in again.
    with Pkcs11Signer.open(token.uri("seal")) as seal:
        seal.sign(MESSAGE)


def test_closed_signer_refuses_to_sign(seal_uri) -> None:
    signer = Pkcs11Signer.open(seal_uri)
    signer.close()
    signer.close()  # idempotent
    with pytest.raises(SigningError, match="closed"):
        signer.sign(MESSAGE)
    assert "closed" in repr(signer)


def test_loading_the_module_leaves_tls_working(token, seal_uri) -> None:
    # Regression: SoftHSM2's C_Initialize left OpenSSL errors queued on this thread, and
    # Python's ssl (same libcrypto) then failed pinning a peer: "no such engine".
    pkcs11.lib(token.module).finalize()  # the next open initialises the module afresh
    with Pkcs11Signer.open(seal_uri) as signer:
        signer.sign(MESSAGE)
    node = TlsIdentity.generate("МВД-РБ", hosts=["node-a.example"])
    server_context(node, [node.certificate_pem])


# --- What lives on the token ---------------------------------------------------------


def test_private_key_never_leaves_token(token, seal_uri) -> None:
    with raw_session(token) as session:
        private = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, label="seal")
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        # Generated on the token and never otherwise.
        assert private[Attribute.LOCAL] is True
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(pkcs11.AttributeSensitive):
            private[Attribute.VALUE]
        # It can sign and nothing else.
        assert private[Attribute.SIGN] is True
        for capability in (Attribute.DECRYPT, Attribute.UNWRAP, Attribute.DERIVE):
            assert private[capability] is False
        public = session.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC_EDWARDS, label="seal")
        assert public[Attribute.EC_PARAMS] == bytes.fromhex("06032b6570")  # OID 1.3.101.112
        assert public[Attribute.ID] == private[Attribute.ID] != b""


def test_generate_refuses_an_existing_label(token, seal_uri) -> None:
    with pytest.raises(TokenError, match="already holds an object labelled 'seal'"):
        generate_token_key(seal_uri)


def test_extractable_key_refused(token) -> None:
    # A key someone made exportable is not a token key in Accord's sense.
    with raw_session(token, rw=True) as session:
        session.generate_keypair(
            KeyType.EC_EDWARDS,
            store=True,
            label="exportable",
            id=b"\x01",
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: bytes.fromhex("06032b6570")},
            private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    with pytest.raises(TokenError, match="extractable or not sensitive"):
        Pkcs11Signer.open(token.uri("exportable"))


def test_public_key_object_swapped_refused(token) -> None:
    # An attacker with write access to the token pairs the seal's private key with
    # another public key object; the self-test on open notices.
    generate_token_key(token.uri("seal", extra=";id=%01"))
    generate_token_key(token.uri("other", extra=";id=%02"))
    with raw_session(token, rw=True) as session:
        session.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC_EDWARDS, id=b"\x01").destroy()
        session.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC_EDWARDS, id=b"\x02")[Attribute.ID] = (
            b"\x01"
        )
    with pytest.raises(TokenError, match="does not match its public key"):
        Pkcs11Signer.open(token.uri("seal"))


def test_key_replaced_under_same_label_refused(hsm) -> None:
    token = hsm.init_token("accord-node")
    expected = generate_token_key(token.uri("seal")).key_id
    with raw_session(token, rw=True) as session:
        for obj in session.get_objects({Attribute.LABEL: "seal"}):
            obj.destroy()
    generate_token_key(token.uri("seal"))
    with pytest.raises(TokenError, match=f"not the expected {expected[:16]}"):
        Pkcs11Signer.open(token.uri("seal"), expected_key_id=expected)


def test_ed448_key_under_the_label_refused(token) -> None:
    # Same key type (EC_EDWARDS), other curve: signatures Accord could never verify.
    with raw_session(token, rw=True) as session:
        session.generate_keypair(
            KeyType.EC_EDWARDS,
            store=True,
            label="ed448",
            id=b"\x01",
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: bytes.fromhex("06032b6571")},  # 1.3.101.113
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
    with pytest.raises(TokenError, match="not Ed25519"):
        Pkcs11Signer.open(token.uri("ed448"))


def test_ambiguous_label_refused_and_id_disambiguates(token) -> None:
    first = generate_token_key(token.uri("seal", extra=";id=%01"))
    with raw_session(token, rw=True) as session:
        session.generate_keypair(
            KeyType.EC_EDWARDS,
            store=True,
            label="seal",
            id=b"\x02",
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: bytes.fromhex("06032b6570")},
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
    with pytest.raises(TokenError, match=r"several Ed25519 private keys .* add id="):
        Pkcs11Signer.open(token.uri("seal"))
    with Pkcs11Signer.open(token.uri("seal", extra=";id=%01")) as signer:
        assert signer.verify_key() == first


def test_key_deleted_under_an_open_signer(token, seal_uri, signer) -> None:
    with raw_session(token, rw=True, login=False) as session:
        session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, label="seal").destroy()
    with pytest.raises(SigningError, match="refused to sign"):
        signer.sign(MESSAGE)


def test_faulty_token_signature_withheld(signer, monkeypatch) -> None:
    # A token that returns garbage (a fault, a bug): the signer checks before it hands
    # out a signature, so nothing a peer would refuse leaves this node.
    from accord.crypto import pkcs11

    monkeypatch.setattr(pkcs11, "_sign_on_token", lambda private, message: bytes(64))
    with pytest.raises(SigningError, match="does not verify"):
        signer.sign(MESSAGE)


# --- Refusals with a clear error -----------------------------------------------------


def test_wrong_pin_refused(token, seal_uri) -> None:
    with pytest.raises(TokenError, match="wrong PIN for token 'accord-node'") as e:
        Pkcs11Signer.open(token.uri("seal", pin="0000"))
    assert "0000" not in str(e.value)
    # The operator's handler for unusable keys catches it.
    assert isinstance(e.value, KeyFileError)


def test_wrong_pin_refused_while_token_logged_in(token, seal_uri, signer) -> None:
    # The token itself would not check a PIN now (it is logged in already); we do.
    with pytest.raises(TokenError, match="wrong PIN"):
        Pkcs11Signer.open(token.uri("seal", pin="0000"))
    signer.sign(MESSAGE)


def test_token_logged_in_by_other_code_refused(token, seal_uri) -> None:
    # Another library in this process holds the login: PKCS#11 would not check our PIN.
    with raw_session(token):
        with pytest.raises(TokenError, match="already logged in by other code"):
            Pkcs11Signer.open(seal_uri)


def test_unknown_object_refused(token, seal_uri) -> None:
    with pytest.raises(TokenError, match="no Ed25519 private key with object 'archive'"):
        Pkcs11Signer.open(token.uri("archive"))


def test_unknown_token_refused(token) -> None:
    other = softhsm.Token("no-such-token", token.pin, token.so_pin, token.module)
    with pytest.raises(TokenError, match="no token labelled 'no-such-token'"):
        Pkcs11Signer.open(other.uri("seal"))


def test_module_not_loadable_refused(tmp_path) -> None:
    (tmp_path / "not-a-module.so").write_bytes(b"\x7fELF garbage")
    for path in (tmp_path / "missing.so", tmp_path / "not-a-module.so"):
        uri = f"pkcs11:token=t;object=seal?module-path={path}&pin-value=1234"
        with pytest.raises(TokenError, match="cannot load the PKCS#11 module"):
            Pkcs11Signer.open(uri)


def test_pin_from_environment(token, seal_uri, monkeypatch) -> None:
    uri = seal_uri.replace(f"pin-value={token.pin}", "pin-source=env:ACCORD_PKCS11_PIN")
    monkeypatch.delenv("ACCORD_PKCS11_PIN", raising=False)
    with pytest.raises(TokenError, match=r"\$ACCORD_PKCS11_PIN, which is not set"):
        Pkcs11Signer.open(uri)
    monkeypatch.setenv("ACCORD_PKCS11_PIN", token.pin)
    with Pkcs11Signer.open(uri) as signer:
        signer.sign(MESSAGE)


def test_pin_from_file(token, seal_uri, tmp_path) -> None:
    pin_file = tmp_path / "pin"
    uri = seal_uri.replace(f"pin-value={token.pin}", f"pin-source=file:{pin_file}")
    with pytest.raises(TokenError, match="cannot read the token PIN"):
        Pkcs11Signer.open(uri)
    pin_file.write_text(token.pin + "\n")  # as `echo` writes it
    with Pkcs11Signer.open(uri) as signer:
        signer.sign(MESSAGE)


def test_empty_pin_file_refused(token, seal_uri, tmp_path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("\n")
    uri = seal_uri.replace(f"pin-value={token.pin}", f"pin-source=file:{pin_file}")
    with pytest.raises(TokenError, match="is empty"):
        Pkcs11Signer.open(uri)


def test_cyrillic_labels(hsm) -> None:
    token = hsm.init_token("Узел МВД")
    uri = token.uri("печать узла")
    assert "%D0%A3" in uri  # percent-encoded UTF-8
    public = generate_token_key(uri)
    with Pkcs11Signer.open(uri) as signer:
        assert signer.verify_key() == public


# --- URIs ----------------------------------------------------------------------------

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def test_uri_parsed() -> None:
    uri = Pkcs11Uri.parse(
        "pkcs11:token=Accord%20node;object=seal;id=%01%ab"
        f"?module-path={MODULE}&pin-source=env:ACCORD_PKCS11_PIN"
    )
    assert uri == Pkcs11Uri(
        token="Accord node",
        module_path=MODULE,
        object="seal",
        id=b"\x01\xab",
        pin_source="env:ACCORD_PKCS11_PIN",
    )
    by_id = Pkcs11Uri.parse(f"pkcs11:token=t;id=%02?module-path={MODULE}&pin-value=1234")
    assert by_id.object is None and by_id.id == b"\x02"
    for form in ("file:/run/secrets/pin", "file:///run/secrets/pin"):
        parsed = Pkcs11Uri.parse(f"pkcs11:token=t;object=k?module-path={MODULE}&pin-source={form}")
        assert parsed.pin_source == "file:/run/secrets/pin"


def test_uri_repr_hides_pin() -> None:
    uri = Pkcs11Uri.parse(f"pkcs11:token=t;object=k?module-path={MODULE}&pin-value=s3cret-pin")
    assert "s3cret-pin" not in repr(uri)
    assert "s3cret-pin" not in uri.describe()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(f"PKCS11:token=t;object=k?module-path={MODULE}&pin-value=1", id="scheme-case"),
        pytest.param(f"pkcs12:token=t;object=k?module-path={MODULE}&pin-value=1", id="scheme"),
        pytest.param(f"pkcs11:object=k?module-path={MODULE}&pin-value=1", id="no-token"),
        pytest.param(f"pkcs11:token=t?module-path={MODULE}&pin-value=1", id="no-object"),
        pytest.param("pkcs11:token=t;object=k?pin-value=1", id="no-module"),
        pytest.param("pkcs11:token=t;object=k", id="no-query"),
        pytest.param("pkcs11:token=t;object=k?module-path=libsofthsm2.so&pin-value=1", id="rel"),
        pytest.param(f"pkcs11:token=t;object=k?module-path={MODULE}", id="no-pin"),
        pytest.param(
            f"pkcs11:token=t;object=k?module-path={MODULE}&pin-value=1&pin-source=env:P",
            id="two-pins",
        ),
        pytest.param(
            f"pkcs11:token=t;token=u;object=k?module-path={MODULE}&pin-value=1", id="dup-path"
        ),
        pytest.param(
            f"pkcs11:token=t;object=k?module-path={MODULE}&module-path={MODULE}&pin-value=1",
            id="dup-query",
        ),
        pytest.param(
            f"pkcs11:token=t;object=k;type=private?module-path={MODULE}&pin-value=1",
            id="unsupported-path-attr",
        ),
        pytest.param(
            f"pkcs11:token=t;object=k?module-path={MODULE}&module-name=p11&pin-value=1",
            id="unsupported-query",
        ),
        pytest.param(f"pkcs11:token=t;object=k;?module-path={MODULE}&pin-value=1", id="empty-attr"),
        pytest.param(f"pkcs11:token=;object=k?module-path={MODULE}&pin-value=1", id="empty-value"),
        pytest.param(f"pkcs11:token=a b;object=k?module-path={MODULE}&pin-value=1", id="raw-space"),
        pytest.param(
            f"pkcs11:token=t;object=k/x?module-path={MODULE}&pin-value=1", id="slash-in-path"
        ),
        pytest.param(
            f"pkcs11:token=t;object=k%2?module-path={MODULE}&pin-value=1", id="bad-escape"
        ),
        pytest.param(f"pkcs11:token=t;object=%ff?module-path={MODULE}&pin-value=1", id="not-utf8"),
        pytest.param(
            f"pkcs11:token=t;object=a%00b?module-path={MODULE}&pin-value=1", id="control-char"
        ),
        pytest.param(
            f"pkcs11:token={'x' * 33};object=k?module-path={MODULE}&pin-value=1",
            id="token-label-too-long",
        ),
        pytest.param(
            f"pkcs11:token=t;object=k?module-path={MODULE}&pin-source=env:1BAD", id="env-name"
        ),
        pytest.param(
            f"pkcs11:token=t;object=k?module-path={MODULE}&pin-source=file:pin", id="file-rel"
        ),
        pytest.param(
            f"pkcs11:token=t;object=k?module-path={MODULE}&pin-source=file://host/pin",
            id="file-host",
        ),
        pytest.param(
            f"pkcs11:token=t;object=k?module-path={MODULE}&pin-source=https://x/pin",
            id="pin-source-scheme",
        ),
        pytest.param(
            f"pkcs11:token=t;object=k?module-path={MODULE}&pin-value=1#frag", id="fragment"
        ),
    ],
)
def test_malformed_uri_refused(text) -> None:
    with pytest.raises(TokenError, match="pkcs11"):
        Pkcs11Uri.parse(text)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"token": ""}, id="empty-token"),
        pytest.param({"object": "a\nb"}, id="control-char"),
        pytest.param({"object": None, "id": b""}, id="empty-id"),
        pytest.param({"module_path": "softhsm2.so"}, id="relative-module"),
        pytest.param({"pin_value": None}, id="no-pin"),
        pytest.param({"pin_value": None, "pin_source": "file://host/pin"}, id="remote-pin"),
    ],
)
def test_uri_constructor_checks_fields(fields) -> None:
    # Parse, don't validate: a reference that breaks an invariant cannot exist at all.
    values = {"token": "t", "module_path": MODULE, "object": "k", "pin_value": "1234"}
    with pytest.raises(TokenError, match="malformed pkcs11: URI"):
        Pkcs11Uri(**{**values, **fields})


def test_malformed_uri_error_does_not_echo_the_pin() -> None:
    with pytest.raises(TokenError) as e:
        Pkcs11Uri.parse(f"pkcs11:token=t;object=k?module-path={MODULE}&pin-value=s3cret pin")
    assert "s3cret" not in str(e.value)


def test_generate_needs_an_object_label() -> None:
    with pytest.raises(TokenError, match="object=<label>"):
        generate_token_key(f"pkcs11:token=t;id=%01?module-path={MODULE}&pin-value=1234")


def test_uri_quoting_helper_round_trips() -> None:
    label = "Узел; МВД & Co?"
    uri = Pkcs11Uri.parse(
        f"pkcs11:token={quote(label, safe='')};object=k?module-path={MODULE}&pin-value=1"
    )
    assert uri.token == label
