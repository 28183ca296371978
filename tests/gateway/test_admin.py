"""The admin functions on real homes: real key files, real SQLite and PostgreSQL databases.

Key files use a cheap Argon2id cost (`CHEAP`) through the `kdf_cost` parameter; the TLS key
keeps its fixed cost, so each init takes about a second.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from sqlmodel import select

from accord.crypto import (
    DecryptionKey,
    Envelope,
    KdfCost,
    KeyFileError,
    Signature,
    SigningKey,
    load_private_key,
    pae,
)
from accord.crypto.descriptor import DESCRIPTOR_TYPE, NodeDescriptor, format_fingerprint
from accord.gateway.admin import home as _admin
from accord.gateway.admin.home import (
    AdminError,
    InitResult,
    add_peer,
    add_user,
    init_node,
    list_keys,
)
from accord.gateway.keys.store import (
    KeyStoreError,
    NodeKeys,
    load_signatory,
    passphrase_from_env_or_prompt,
)
from accord.gateway.node.config import Home
from accord.policy import DEFAULT_PROFILE_PATH, load_profile
from accord.storage import (
    Database,
    KeyKind,
    KeyStatus,
    PeerStatus,
    Role,
    User,
    get_peer,
    get_user,
)
from accord.storage import list_keys as stored_keys

CHEAP = KdfCost(opslimit=1, memlimit=8192)
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
PASS_A = "пароль узла А".encode()
PASS_B = "пароль узла Б".encode()
PARTY_A = "МВД-РБ"
PARTY_B = "Росгвардия"
TOKEN = re.compile(r"^acc_[A-Za-z0-9_-]{43}$")
UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/nowhere"


@dataclass
class Node:
    home: Home
    init: InitResult
    passphrase: bytes


def make_node(
    root: Path,
    party: str = PARTY_A,
    *,
    port: int = 9443,
    passphrase: bytes = PASS_A,
    database: str | None = None,
    now: datetime = NOW,
    name: str | None = None,
) -> Node:
    result = init_node(
        root,
        party=party,
        name=name or f"Узел {party}",
        listen=f"127.0.0.1:{port}",
        database=database,
        passphrase=passphrase,
        now=now,
        kdf_cost=CHEAP,
    )
    return Node(Home(root), result, passphrase)


def open_db(node: Node) -> Database:
    return Database.open(node.home.load_config().database)


def fingerprint_of(descriptor: bytes) -> str:
    return _admin.read_descriptor(descriptor).fingerprint


@pytest.fixture
def node_a(tmp_path: Path) -> Node:
    return make_node(tmp_path / "a", PARTY_A, port=9443, passphrase=PASS_A)


@pytest.fixture
def node_b(tmp_path: Path) -> Node:
    return make_node(tmp_path / "b", PARTY_B, port=9543, passphrase=PASS_B)


# Each init costs about a second (the TLS key's fixed Argon2id cost), so tests that only
# read, or whose action is refused, share one pair of nodes per module; each of them checks
# that its refused action changed nothing.


@pytest.fixture(scope="module")
def shared_a(tmp_path_factory: pytest.TempPathFactory) -> Node:
    return make_node(tmp_path_factory.mktemp("shared") / "a", PARTY_A, port=9443)


@pytest.fixture(scope="module")
def shared_b(tmp_path_factory: pytest.TempPathFactory) -> Node:
    return make_node(tmp_path_factory.mktemp("shared") / "b", PARTY_B, port=9543, passphrase=PASS_B)


@pytest.fixture(scope="module")
def a_descriptor(shared_a: Node) -> bytes:
    return _admin.export_descriptor(shared_a.home, PASS_A, NOW)


def user_names(node: Node) -> list[str]:
    with open_db(node) as db, db.session(readonly=True) as session:
        return [u.name for u in session.exec(select(User)).all()]


# --- init ----------------------------------------------------------------------------------


def test_init_creates_everything(tmp_path: Path, database_url: str) -> None:
    root = tmp_path / "узел"
    node = make_node(root, database=database_url)
    home, result = node.home, node.init

    # The result is what `accord init --json` prints.
    assert result.party == PARTY_A
    assert result.node_url == "https://127.0.0.1:9444"
    assert result.peer_url == "https://127.0.0.1:9443"
    assert result.ca_file == root / "tls" / "tls.crt" and result.ca_file.is_file()
    assert TOKEN.match(result.admin_token)
    assert re.fullmatch(r"([0-9A-F]{4} ){15}[0-9A-F]{4}", result.fingerprint)

    # The folders are private; the key files exist and are private.
    for folder in (root, root / "keys", root / "tls", root / "signatories", root / "blobs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for key_file in (home.seal_key, home.encryption_key, home.tls_dir / "tls.key"):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file
    assert stat.S_IMODE(home.config_file.stat().st_mode) == 0o600

    config = home.load_config()
    assert (config.party, config.name) == (PARTY_A, f"Узел {PARTY_A}")
    assert config.database == database_url
    assert config.local_url == result.node_url

    # The keys on disk are the ones registered, and the fingerprint is the descriptor's.
    keys = NodeKeys.load(home, PASS_A)
    with open_db(node) as db, db.session(readonly=True) as session:
        rows = {k.kind: k for k in stored_keys(session)}
        admin = get_user(session, "admin")
    assert set(rows) == {KeyKind.SEAL, KeyKind.ENCRYPTION, KeyKind.TLS}
    assert rows[KeyKind.SEAL].key_id == keys.seal.key_id
    assert rows[KeyKind.SEAL].store_ref == str(home.seal_key)
    assert rows[KeyKind.ENCRYPTION].key_id == keys.encryption.key_id
    assert rows[KeyKind.ENCRYPTION].public == keys.encryption.recipient().to_dict()
    assert rows[KeyKind.TLS].key_id == keys.tls.fingerprint
    assert rows[KeyKind.TLS].not_after == keys.tls.not_after
    assert all(k.owner == PARTY_A and k.status is KeyStatus.ACTIVE for k in rows.values())
    assert admin.role is Role.ADMIN
    assert admin.token_sha256 == hashlib.sha256(result.admin_token.encode()).hexdigest()

    descriptor = _admin.read_descriptor(_admin.export_descriptor(home, PASS_A, NOW))
    assert format_fingerprint(descriptor.fingerprint) == result.fingerprint


def test_init_key_files_are_encrypted(shared_a: Node) -> None:
    home = shared_a.home
    keys = NodeKeys.load(home, PASS_A)
    # The one explicit way to take the X25519 secret out of crypto/, for this check only.
    identity = keys.encryption.export_age_identity_unencrypted()
    everything = b"".join(p.read_bytes() for p in home.root.rglob("*") if p.is_file())
    assert identity.encode() not in everything
    assert identity.lower().encode() not in everything
    assert b"BEGIN PRIVATE KEY" not in everything  # only the ENCRYPTED PKCS#8 form
    assert (home.tls_dir / "tls.key").read_bytes().count(b"BEGIN ENCRYPTED PRIVATE KEY") == 1
    for path in (home.seal_key, home.encryption_key):
        document = json.loads(path.read_text())
        assert document["kdf"]["name"] == "argon2id"
        assert document["cipher"] == "xchacha20poly1305"
        assert set(document) >= {"ciphertext", "nonce", "key_id"}
        with pytest.raises(KeyFileError):
            load_private_key(path.read_bytes(), b"not the passphrase")


def test_wrong_passphrase_refused(shared_a: Node) -> None:
    with pytest.raises(KeyStoreError, match="ACCORD_PASSPHRASE") as caught:
        NodeKeys.load(shared_a.home, b"wrong passphrase")
    assert "wrong passphrase" in str(caught.value)
    with pytest.raises(AdminError, match="ACCORD_PASSPHRASE"):
        _admin.export_descriptor(shared_a.home, PASS_B, NOW)
    assert NodeKeys.load(shared_a.home, PASS_A).seal.key_id


def test_init_refuses_non_empty_home(tmp_path: Path) -> None:
    root = tmp_path / "занято"
    root.mkdir()
    (root / "notes.txt").write_text("чужой файл")
    with pytest.raises(AdminError, match="not empty"):
        make_node(root)
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    assert (root / "notes.txt").read_text() == "чужой файл"


def test_init_refuses_existing_node(shared_a: Node) -> None:
    before = shared_a.home.seal_key.read_bytes()
    with pytest.raises(AdminError, match="not empty"):
        make_node(shared_a.home.root)
    assert shared_a.home.seal_key.read_bytes() == before


def test_init_into_empty_directory(tmp_path: Path) -> None:
    root = tmp_path / "пусто"
    root.mkdir(mode=0o755)
    node = make_node(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert node.home.seal_key.is_file()


def test_init_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    # The database step comes last and fails for real (nothing listens on port 1): every
    # folder init created, including missing parents, must be gone.
    root = tmp_path / "новый" / "узел"
    with pytest.raises(AdminError, match="database cannot be reached"):
        make_node(root, database=UNREACHABLE_DB)
    assert list(tmp_path.iterdir()) == []


def test_init_failure_empties_an_existing_directory(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    with pytest.raises(AdminError):
        make_node(root, database=UNREACHABLE_DB)
    assert root.is_dir() and list(root.iterdir()) == []


def test_init_refuses_a_database_holding_another_node(tmp_path: Path, database_url: str) -> None:
    first = make_node(tmp_path / "a", database=database_url)
    with pytest.raises(AdminError, match="already holds a node's keys"):
        make_node(tmp_path / "b", PARTY_B, port=9543, database=database_url)
    assert not (tmp_path / "b").exists()
    with open_db(first) as db, db.session(readonly=True) as session:
        assert {k.owner for k in stored_keys(session)} == {PARTY_A}
        assert len(session.exec(select(User)).all()) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"listen": "127.0.0.1"}, "HOST:PORT"),
        ({"listen": "127.0.0.1:9443", "local": "127.0.0.1:9443"}, "another port"),
        ({"party": "МВД РБ"}, "party id"),
        ({"party": "a/b"}, "party id"),
        ({"name": "  "}, "--name"),
        ({"passphrase": b""}, "passphrase"),
        ({"database": "mysql://db/accord"}, "unsupported database"),
    ],
)
def test_init_refuses_bad_input_before_creating_anything(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "party": PARTY_A,
        "name": "Узел",
        "listen": "127.0.0.1:9443",
        "passphrase": PASS_A,
        "now": NOW,
        "kdf_cost": CHEAP,
    }
    arguments.update(changes)
    with pytest.raises(AdminError, match=message):
        init_node(tmp_path / "home", **arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "home").exists()


def test_local_api_defaults_to_loopback_next_port(tmp_path: Path) -> None:
    public = init_node(
        tmp_path / "a",
        party=PARTY_A,
        name="А",
        listen="0.0.0.0:9443",  # the peer API on every interface
        passphrase=PASS_A,
        now=NOW,
        kdf_cost=CHEAP,
    )
    assert public.node_url == "https://127.0.0.1:9444"
    explicit = init_node(
        tmp_path / "b",
        party=PARTY_B,
        name="Б",
        listen="127.0.0.1:9543",
        local="localhost:8080",
        passphrase=PASS_B,
        now=NOW,
        kdf_cost=CHEAP,
    )
    assert explicit.node_url == "https://localhost:8080"


def test_tls_certificate_names_the_local_and_peer_hosts(shared_a: Node) -> None:
    certificate = x509.load_pem_x509_certificate(shared_a.init.ca_file.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_init_copies_the_profile_and_binds_it_into_the_descriptor(tmp_path: Path) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_bytes((DEFAULT_PROFILE_PATH.parent / "tlp.toml").read_bytes())
    init_node(
        tmp_path / "a",
        party=PARTY_A,
        name="А",
        listen="127.0.0.1:9443",
        profile=profile,
        passphrase=PASS_A,
        now=NOW,
        kdf_cost=CHEAP,
    )
    home = Home(tmp_path / "a")
    assert home.profile_file.read_bytes() == profile.read_bytes()
    descriptor = _admin.read_descriptor(_admin.export_descriptor(home, PASS_A, NOW))
    assert descriptor.profile_sha256 == load_profile(profile).digest


# --- descriptors and peers ----------------------------------------------------------------


def test_two_homes_exchange_descriptors(tmp_path: Path, database_url: str) -> None:
    a = make_node(tmp_path / "a", PARTY_A, port=9443)
    b = make_node(tmp_path / "b", PARTY_B, port=9543, passphrase=PASS_B, database=database_url)

    a_descriptor = _admin.export_descriptor(a.home, PASS_A, NOW)
    added = add_peer(b.home, a_descriptor, fingerprint=a.init.fingerprint, now=NOW)
    assert (added.party, added.change) == (PARTY_A, "added")
    assert added.endpoint == "https://127.0.0.1:9443"
    assert added.fingerprint == a.init.fingerprint

    b_descriptor = _admin.export_descriptor(b.home, PASS_B, NOW)
    assert add_peer(a.home, b_descriptor, fingerprint=b.init.fingerprint, now=NOW).change == "added"

    a_keys = NodeKeys.load(a.home, PASS_A)
    with open_db(b) as db, db.session(readonly=True) as session:
        peer = get_peer(session, PARTY_A)
        trusted = {k.kind: k for k in stored_keys(session, owner=PARTY_A)}
    assert peer.status is PeerStatus.ACTIVE
    assert peer.tls_cert_sha256 == a_keys.tls.fingerprint
    assert peer.descriptor.encode() == a_descriptor  # stored verbatim
    assert peer.name == f"Узел {PARTY_A}"
    assert trusted[KeyKind.SEAL].key_id == a_keys.seal.key_id
    assert trusted[KeyKind.ENCRYPTION].key_id == a_keys.encryption.key_id
    # The pinned certificate is in the key history too, so a TLS rotation can name it.
    assert trusted[KeyKind.TLS].key_id == a_keys.tls.fingerprint
    assert trusted[KeyKind.TLS].not_after == a_keys.tls.not_after
    assert all(k.store_ref is None for k in trusted.values())

    # Adding the same descriptor again changes nothing.
    again = add_peer(b.home, a_descriptor, fingerprint=a.init.fingerprint, now=NOW)
    assert again.change == "unchanged"
    assert len(list_keys(b.home, include_peers=True)) == 6  # 3 of B's own, 3 of A's


def test_peer_add_with_wrong_fingerprint_refused(
    shared_a: Node, a_descriptor: bytes, shared_b: Node
) -> None:
    descriptor = a_descriptor
    with pytest.raises(AdminError, match="fingerprint mismatch"):
        add_peer(shared_b.home, descriptor, fingerprint=shared_b.init.fingerprint, now=NOW)
    with pytest.raises(AdminError, match="fingerprint mismatch"):
        add_peer(shared_b.home, descriptor, fingerprint="0000 1111", now=NOW)
    assert list_keys(shared_b.home, include_peers=True) == list_keys(shared_b.home)


def test_peer_add_accepts_fingerprint_in_any_case_and_spacing(node_a: Node, node_b: Node) -> None:
    descriptor = _admin.export_descriptor(node_a.home, PASS_A, NOW)
    written = node_a.init.fingerprint.lower().replace(" ", "")
    assert add_peer(node_b.home, descriptor, fingerprint=written, now=NOW).change == "added"


def test_descriptor_tampered_refused(shared_a: Node, a_descriptor: bytes, shared_b: Node) -> None:
    descriptor = a_descriptor
    middle = len(descriptor) // 2
    tampered = descriptor[:middle] + bytes([descriptor[middle] ^ 0x01]) + descriptor[middle + 1 :]
    with pytest.raises(AdminError, match="does not verify"):
        add_peer(shared_b.home, tampered, fingerprint=shared_a.init.fingerprint, now=NOW)
    with pytest.raises(AdminError, match="does not verify"):
        add_peer(shared_b.home, tampered, fingerprint=None, now=NOW)
    assert list_keys(shared_b.home, include_peers=True) == list_keys(shared_b.home)


def test_descriptor_any_byte_changed_refused(a_descriptor: bytes) -> None:
    descriptor = a_descriptor
    accepted = []
    for i in range(len(descriptor)):
        changed = bytearray(descriptor)
        changed[i] ^= 0x01
        try:
            _admin.read_descriptor(bytes(changed))
        except AdminError:
            continue
        accepted.append(i)
    assert accepted == []


def test_descriptor_signed_by_other_key_refused(
    shared_a: Node, a_descriptor: bytes, shared_b: Node
) -> None:
    genuine = Envelope.from_bytes(a_descriptor)
    seal_id = genuine.signatures[0].keyid
    intruder = SigningKey.generate()

    # 1. A's exact descriptor, the signature made by another key under A's seal key id.
    forged = Envelope(
        DESCRIPTOR_TYPE,
        genuine.payload,
        (Signature(seal_id, intruder.sign(pae(DESCRIPTOR_TYPE, genuine.payload))),),
    )
    with pytest.raises(AdminError, match="does not verify"):
        add_peer(shared_b.home, forged.to_bytes(), fingerprint=shared_a.init.fingerprint, now=NOW)

    # 2. The same signature added under the intruder's own key id: A's seal has not signed.
    extra = Envelope(
        DESCRIPTOR_TYPE,
        genuine.payload,
        (Signature(intruder.key_id, intruder.sign(pae(DESCRIPTOR_TYPE, genuine.payload))),),
    )
    with pytest.raises(AdminError, match="does not verify"):
        add_peer(shared_b.home, extra.to_bytes(), fingerprint=shared_a.init.fingerprint, now=NOW)

    # 3. A descriptor claiming A's party, endpoint and certificate but naming and signed by
    #    the intruder's seal: its self-signature holds, only the fingerprint catches it.
    claimed = NodeDescriptor.from_payload(json.loads(genuine.payload))
    substitute = NodeDescriptor(
        party=claimed.party,
        name=claimed.name,
        endpoint=claimed.endpoint,
        seal=intruder.verify_key(),
        encryption=DecryptionKey.generate().recipient(),
        tls_certificate_pem=claimed.tls_certificate_pem,
        tls_certificate_sha256=claimed.tls_certificate_sha256,
        signatories=(),
        created=NOW,
    ).sign(intruder)
    with pytest.raises(AdminError, match="fingerprint mismatch"):
        add_peer(
            shared_b.home, substitute.to_bytes(), fingerprint=shared_a.init.fingerprint, now=NOW
        )
    assert list_keys(shared_b.home, include_peers=True) == list_keys(shared_b.home)


def test_own_descriptor_refused_as_peer(shared_a: Node, a_descriptor: bytes) -> None:
    descriptor = a_descriptor
    with pytest.raises(AdminError, match="this node's own"):
        add_peer(shared_a.home, descriptor, fingerprint=shared_a.init.fingerprint, now=NOW)


def test_newer_descriptor_updates_peer_and_retires_old_keys(tmp_path: Path, node_b: Node) -> None:
    old = make_node(tmp_path / "a-old", PARTY_A, port=9443)
    old_descriptor = _admin.export_descriptor(old.home, PASS_A, NOW)
    add_peer(node_b.home, old_descriptor, fingerprint=old.init.fingerprint, now=NOW)

    # The same Party re-created its node later: new keys, new endpoint, a newer descriptor.
    later = NOW + timedelta(days=30)
    new = make_node(tmp_path / "a-new", PARTY_A, port=10443, now=later)
    new_descriptor = _admin.export_descriptor(new.home, PASS_A, later)
    result = add_peer(node_b.home, new_descriptor, fingerprint=new.init.fingerprint, now=later)
    assert (result.change, result.endpoint) == ("updated", "https://127.0.0.1:10443")

    old_keys, new_keys = NodeKeys.load(old.home, PASS_A), NodeKeys.load(new.home, PASS_A)
    with open_db(node_b) as db, db.session(readonly=True) as session:
        peer = get_peer(session, PARTY_A)
        history = {k.key_id: k for k in stored_keys(session, owner=PARTY_A)}
    assert peer.tls_cert_sha256 == new_keys.tls.fingerprint
    assert history[old_keys.seal.key_id].status is KeyStatus.RETIRED
    assert history[old_keys.seal.key_id].not_after == later
    assert history[old_keys.encryption.key_id].status is KeyStatus.RETIRED
    assert history[new_keys.seal.key_id].status is KeyStatus.ACTIVE
    assert history[new_keys.encryption.key_id].status is KeyStatus.ACTIVE

    # Going back to the older descriptor is a rollback and is refused.
    with pytest.raises(AdminError, match="older than the one already trusted"):
        add_peer(node_b.home, old_descriptor, fingerprint=old.init.fingerprint, now=later)


def test_peer_descriptor_naming_our_key_refused(node_a: Node, node_b: Node) -> None:
    # A descriptor listing B's own signatory as one of A's signatories would make B
    # attribute its own signatory's signatures to A.
    add_user(
        node_b.home,
        "Петров П.П.",
        role=Role.SIGNATORY,
        signatory_passphrase="подпись Петрова".encode(),
        now=NOW,
        kdf_cost=CHEAP,
    )
    b_signatory = _admin.read_descriptor(
        _admin.export_descriptor(node_b.home, PASS_B, NOW)
    ).signatories[0]
    a_keys = NodeKeys.load(node_a.home, PASS_A)
    own = _admin.read_descriptor(_admin.export_descriptor(node_a.home, PASS_A, NOW))
    hostile = NodeDescriptor(
        party=own.party,
        name=own.name,
        endpoint=own.endpoint,
        seal=own.seal,
        encryption=own.encryption,
        tls_certificate_pem=own.tls_certificate_pem,
        tls_certificate_sha256=own.tls_certificate_sha256,
        signatories=(b_signatory,),
        created=NOW,
        profile_sha256=own.profile_sha256,
    ).sign(a_keys.seal)
    with pytest.raises(AdminError, match="already known here"):
        add_peer(node_b.home, hostile.to_bytes(), fingerprint=node_a.init.fingerprint, now=NOW)


def test_signatories_travel_in_the_descriptor(node_a: Node, node_b: Node) -> None:
    head = add_user(
        node_a.home,
        "Иванов И.И.",
        role=Role.SIGNATORY,
        signatory_passphrase="подпись Иванова".encode(),
        now=NOW,
        kdf_cost=CHEAP,
    )
    add_user(node_a.home, "Сидорова", role=Role.OPERATOR, now=NOW)
    descriptor = _admin.export_descriptor(node_a.home, PASS_A, NOW)
    signatories = _admin.read_descriptor(descriptor).signatories
    assert [(s.name, s.role, s.key.key_id) for s in signatories] == [
        ("Иванов И.И.", "signatory", head.signatory_key_id)
    ]
    add_peer(node_b.home, descriptor, fingerprint=node_a.init.fingerprint, now=NOW)
    with open_db(node_b) as db, db.session(readonly=True) as session:
        (trusted,) = stored_keys(session, owner=PARTY_A, kind=KeyKind.SIGNATORY)
    assert trusted.key_id == head.signatory_key_id
    assert trusted.public["signatory"] == "Иванов И.И."
    # A signatory added later reaches the peer with the next descriptor.
    deputy = add_user(
        node_a.home,
        "Петрова А.А.",
        role=Role.SIGNATORY,
        signatory_passphrase="подпись Петровой".encode(),
        now=NOW + timedelta(hours=1),
        kdf_cost=CHEAP,
    )
    later = NOW + timedelta(hours=1)
    updated = _admin.export_descriptor(node_a.home, PASS_A, later)
    assert add_peer(node_b.home, updated, fingerprint=None, now=later).change == "updated"
    with open_db(node_b) as db, db.session(readonly=True) as session:
        ids = {k.key_id for k in stored_keys(session, owner=PARTY_A, kind=KeyKind.SIGNATORY)}
    assert ids == {head.signatory_key_id, deputy.signatory_key_id}


# --- users --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_user_add_for_each_role(node_a: Node, role: Role) -> None:
    name = f"Пользователь-{role.value}"
    passphrase = "личный пароль".encode() if role is Role.SIGNATORY else None
    result = add_user(
        node_a.home,
        name,
        role=role,
        clearance="restricted",
        signatory_passphrase=passphrase,
        now=NOW,
        kdf_cost=CHEAP,
    )
    assert (result.user, result.role, result.clearance) == (name, role, "RESTRICTED")
    assert TOKEN.match(result.token)
    with open_db(node_a) as db, db.session(readonly=True) as session:
        user = get_user(session, name)
        own_keys = stored_keys(session, owner=name)
    assert user.role is role and user.clearance == "RESTRICTED" and not user.disabled
    assert user.token_sha256 == hashlib.sha256(result.token.encode()).hexdigest()
    key_file = node_a.home.signatory_key(name)
    if role is Role.SIGNATORY:
        assert [k.kind for k in own_keys] == [KeyKind.SIGNATORY]
        assert own_keys[0].key_id == result.signatory_key_id
        assert own_keys[0].store_ref == str(key_file)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    else:
        assert own_keys == [] and result.signatory_key_id is None
        assert not key_file.exists()


def test_tokens_are_stored_hashed_only(node_a: Node) -> None:
    result = add_user(node_a.home, "Аудитор", role=Role.AUDITOR, now=NOW)
    with open_db(node_a) as db:
        db.close()  # checkpoint SQLite's WAL into the file
    stored = b"".join(p.read_bytes() for p in node_a.home.root.rglob("*") if p.is_file())
    for token in (result.token, node_a.init.admin_token):
        assert token.encode() not in stored
        assert token.removeprefix("acc_").encode() not in stored
        assert hashlib.sha256(token.encode()).hexdigest().encode() in stored


def test_signatory_key_is_under_its_own_passphrase(node_a: Node) -> None:
    own = "только Иванов знает".encode()
    result = add_user(
        node_a.home,
        "Иванов",
        role=Role.SIGNATORY,
        signatory_passphrase=own,
        now=NOW,
        kdf_cost=CHEAP,
    )
    key = load_signatory(node_a.home, "Иванов", own)
    assert key.key_id == result.signatory_key_id
    with pytest.raises(KeyStoreError, match="ACCORD_SIGNATORY_PASSPHRASE"):
        load_signatory(node_a.home, "Иванов", PASS_A)
    with pytest.raises(KeyFileError):
        load_private_key(node_a.home.signatory_key("Иванов").read_bytes(), PASS_A)


def test_signatory_with_the_node_passphrase_refused(node_a: Node) -> None:
    with pytest.raises(AdminError, match="node's passphrase"):
        add_user(
            node_a.home,
            "Иванов",
            role=Role.SIGNATORY,
            signatory_passphrase=PASS_A,
            now=NOW,
            kdf_cost=CHEAP,
        )
    # Nothing of the refused user remains: no row, no key, no file.
    assert not node_a.home.signatory_key("Иванов").exists()
    assert user_names(node_a) == ["admin"]
    assert list_keys(node_a.home) == list_keys(node_a.home, include_peers=True)
    assert {k.kind for k in list_keys(node_a.home)} == {
        KeyKind.SEAL,
        KeyKind.ENCRYPTION,
        KeyKind.TLS,
    }


def test_signatory_without_passphrase_refused(shared_a: Node) -> None:
    with pytest.raises(AdminError, match="ACCORD_SIGNATORY_PASSPHRASE"):
        add_user(shared_a.home, "Иванов", role=Role.SIGNATORY, now=NOW)
    with pytest.raises(AdminError, match="only a signatory"):
        add_user(shared_a.home, "Иванов", role=Role.OPERATOR, signatory_passphrase=b"x", now=NOW)
    assert user_names(shared_a) == ["admin"]


@pytest.mark.parametrize("level", ["SECRET", "secret", "Top Secret", "TOP_SECRET"])
def test_secret_clearance_refused(shared_a: Node, level: str) -> None:
    with pytest.raises(AdminError, match=r"art\. 7\.5"):
        add_user(shared_a.home, "Смирнов", role=Role.OPERATOR, clearance=level, now=NOW)
    assert user_names(shared_a) == ["admin"]


def test_unknown_clearance_refused(shared_a: Node) -> None:
    with pytest.raises(AdminError, match="OFFICIAL, RESTRICTED, CONFIDENTIAL"):
        add_user(shared_a.home, "Смирнов", role=Role.OPERATOR, clearance="ДСП", now=NOW)
    assert user_names(shared_a) == ["admin"]


def test_default_clearance_is_official(node_a: Node) -> None:
    assert add_user(node_a.home, "Смирнов", role="operator", now=NOW).clearance == "OFFICIAL"


def test_duplicate_user_refused(shared_a: Node) -> None:
    with pytest.raises(AdminError, match="already exists"):
        add_user(shared_a.home, "admin", role=Role.OPERATOR, now=NOW)


@pytest.mark.parametrize("name", ["", " Иванов", "../Иванов", ".скрытый", "a\\b", "x\ny"])
def test_unusable_user_name_refused(shared_a: Node, name: str) -> None:
    with pytest.raises(AdminError, match="user name"):
        add_user(shared_a.home, name, role=Role.OPERATOR, now=NOW)
    assert user_names(shared_a) == ["admin"]


# --- keys and passphrases -------------------------------------------------------------


def test_list_keys(node_a: Node, node_b: Node) -> None:
    keys = list_keys(node_a.home)
    assert sorted(k.kind.value for k in keys) == ["encryption", "seal", "tls"]
    assert all(k.local and k.owner == PARTY_A and k.not_before == NOW for k in keys)
    tls = next(k for k in keys if k.kind is KeyKind.TLS)
    assert tls.not_after is not None and tls.not_after > NOW + timedelta(days=300)
    descriptor = _admin.export_descriptor(node_b.home, PASS_B, NOW)
    add_peer(node_a.home, descriptor, fingerprint=node_b.init.fingerprint, now=NOW)
    assert list_keys(node_a.home) == keys
    peers = [k for k in list_keys(node_a.home, include_peers=True) if not k.local]
    assert {(k.kind, k.owner) for k in peers} == {
        (KeyKind.SEAL, PARTY_B),
        (KeyKind.ENCRYPTION, PARTY_B),
        (KeyKind.TLS, PARTY_B),
    }


def test_admin_functions_need_a_node_home(tmp_path: Path) -> None:
    with pytest.raises(AdminError, match="accord init"):
        list_keys(Home(tmp_path / "nothing"))


def test_passphrase_from_environment() -> None:
    got = passphrase_from_env_or_prompt(environ={"ACCORD_PASSPHRASE": "секрет"})
    assert got == "секрет".encode()
    with pytest.raises(KeyStoreError, match="set but empty"):
        passphrase_from_env_or_prompt(environ={"ACCORD_PASSPHRASE": ""})


def test_passphrase_without_environment_or_terminal_refused() -> None:
    with pytest.raises(KeyStoreError, match="ACCORD_SIGNATORY_PASSPHRASE"):
        passphrase_from_env_or_prompt("ACCORD_SIGNATORY_PASSPHRASE", environ={}, interactive=False)
