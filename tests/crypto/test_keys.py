"""Keys: ids, encrypted key files, wrong passphrases, tampered files."""

from __future__ import annotations

import json
import stat

import pytest

from accord.crypto import (
    DecryptionKey,
    KdfCost,
    KeyFileError,
    Passphrase,
    RecipientKey,
    SigningKey,
    VerifyKey,
    load_private_key,
)

FAST = KdfCost(opslimit=2, memlimit=8 * 1024 * 1024)
PASSPHRASE = "пароль узла — долгий".encode()


def test_key_ids_are_stable_and_distinct_per_algorithm() -> None:
    seal = SigningKey.generate()
    assert seal.key_id == seal.verify_key().key_id
    assert len(seal.key_id) == 64
    assert seal.key_id != SigningKey.generate().key_id
    enc = DecryptionKey.generate()
    assert enc.key_id == enc.recipient().key_id
    # The same 32 bytes read as the other algorithm's key never share an id.
    vk = seal.verify_key().to_dict()
    as_x25519 = RecipientKey.from_dict({"alg": "x25519", "public": vk["public"]})
    assert as_x25519.key_id != seal.key_id


def test_public_key_dict_round_trip() -> None:
    vk = SigningKey.generate().verify_key()
    assert VerifyKey.from_dict(vk.to_dict()) == vk
    rk = DecryptionKey.generate().recipient()
    assert RecipientKey.from_dict(rk.to_dict()) == rk


def test_public_key_with_mismatched_key_id_refused() -> None:
    vk = SigningKey.generate().verify_key().to_dict()
    vk["key_id"] = SigningKey.generate().key_id
    with pytest.raises(ValueError, match="key_id"):
        VerifyKey.from_dict(vk)


@pytest.mark.parametrize("factory", [SigningKey.generate, DecryptionKey.generate])
def test_key_file_round_trip(factory, tmp_path) -> None:
    key = factory()
    path = tmp_path / "key.json"
    key.save(path, PASSPHRASE, cost=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_private_key(path.read_bytes(), PASSPHRASE)
    assert type(loaded) is type(key)
    assert loaded.key_id == key.key_id


def test_signing_key_from_file_signs_verifiably(tmp_path) -> None:
    key = SigningKey.generate()
    loaded = load_private_key(key.to_encrypted_file(PASSPHRASE, cost=FAST), PASSPHRASE)
    assert isinstance(loaded, SigningKey)
    assert key.verify_key().verify(b"msg", loaded.sign(b"msg"))


def test_wrong_passphrase_is_one_clear_error() -> None:
    data = SigningKey.generate().to_encrypted_file(PASSPHRASE, cost=FAST)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(data, b"not the passphrase")


def test_key_file_contains_no_plaintext_secret() -> None:
    key = DecryptionKey.generate()
    data = key.to_encrypted_file(PASSPHRASE, cost=FAST)
    assert key._secret not in data
    assert key._secret.hex().encode() not in data
    assert key.export_age_identity_unencrypted().encode() not in data


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key_id", "0" * 64),
        ("alg", "x25519"),
        ("kdf", {"name": "argon2id", "opslimit": 3, "memlimit": 8388608, "salt": None}),
    ],
)
def test_key_file_header_swapped_refused(field, value) -> None:
    key = SigningKey.generate()
    document = json.loads(key.to_encrypted_file(PASSPHRASE, cost=FAST))
    if field == "kdf":
        value = dict(value, salt=document["kdf"]["salt"])
    document[field] = value
    with pytest.raises(KeyFileError):
        load_private_key(json.dumps(document).encode(), PASSPHRASE)


@pytest.mark.parametrize(
    "data", [b"", b"{}", b"[]", b"\xff\xfe", b'{"format": "accord-private-key"}']
)
def test_damaged_key_file_refused(data) -> None:
    with pytest.raises(KeyFileError):
        load_private_key(data, PASSPHRASE)


def test_repr_never_shows_secret() -> None:
    key = SigningKey.generate()
    assert key._secret.hex() not in repr(key)
    assert key.key_id[:16] in repr(key)


def test_empty_passphrase_refused() -> None:
    with pytest.raises(ValueError, match="passphrase"):
        SigningKey.generate().to_encrypted_file(b"")


def test_age_identity_round_trip() -> None:
    key = DecryptionKey.generate()
    identity = key.export_age_identity_unencrypted()
    assert identity.startswith("AGE-SECRET-KEY-1")
    assert DecryptionKey.from_age_identity(identity).key_id == key.key_id
    recipient = key.recipient().to_age_recipient()
    assert recipient.startswith("age1")
    assert RecipientKey.from_age_recipient(recipient) == key.recipient()


class CountingArgon2:
    """Counts the real derivations (a spy: each call still runs libsodium's Argon2id)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from accord.crypto import _primitives

        self.calls = 0
        real = _primitives.argon2id

        def counted(*args: object, **kwargs: object) -> bytes:
            self.calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(_primitives, "argon2id", counted)


def test_a_kept_passphrase_derives_each_key_file_once(monkeypatch) -> None:
    seal, enc = SigningKey.generate(), DecryptionKey.generate()
    files = [k.to_encrypted_file(PASSPHRASE, cost=FAST) for k in (seal, enc)]
    argon2 = CountingArgon2(monkeypatch)
    kept = Passphrase(PASSPHRASE)
    for _ in range(3):
        assert [load_private_key(f, kept).key_id for f in files] == [seal.key_id, enc.key_id]
    assert argon2.calls == 2  # once per file (per salt), not once per opening
    # Plain bytes remember nothing: a signatory's passphrase is derived at every use.
    load_private_key(files[0], PASSPHRASE)
    load_private_key(files[0], PASSPHRASE)
    assert argon2.calls == 4


def test_a_kept_wrong_passphrase_stays_wrong(monkeypatch) -> None:
    data = SigningKey.generate().to_encrypted_file(PASSPHRASE, cost=FAST)
    wrong = Passphrase(b"not the passphrase")
    for _ in range(2):
        with pytest.raises(KeyFileError, match="wrong passphrase"):
            load_private_key(data, wrong)


def test_a_kept_passphrase_never_shows_itself() -> None:
    kept = Passphrase(PASSPHRASE)
    assert kept == PASSPHRASE
    assert PASSPHRASE.decode() not in repr(kept) and PASSPHRASE.decode() not in str(kept)
    assert "пароль" not in f"{kept!r} {kept}"
