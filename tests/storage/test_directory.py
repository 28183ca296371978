"""Peers, keys and users."""

from __future__ import annotations

import pytest

from accord.storage import (
    Database,
    DuplicateError,
    InvalidValue,
    KeyKind,
    KeyStatus,
    NotFound,
    PeerStatus,
    Role,
    add_key,
    add_peer,
    add_user,
    find_peer_by_certificate,
    find_user_by_token_hash,
    get_key,
    get_peer,
    get_user,
    list_keys,
    list_peers,
    retire_key,
    revoke_key,
)
from tests.storage.helpers import (
    PEER_NAME,
    PEER_PARTY,
    T0,
    at,
    descriptor_of,
    digest,
    register_peer,
)

ED25519_PUBLIC = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOgF4iJ1yCGgLeyKM"}


def test_peer_round_trip(db: Database) -> None:
    with db.session() as session:
        register_peer(session)
        register_peer(
            session, party_id="KZ-MVD", name="Министерство внутренних дел Республики Казахстан"
        )
    with db.session(readonly=True) as session:
        peer = get_peer(session, PEER_PARTY)
        assert (peer.name, peer.status, peer.added_at) == (PEER_NAME, PeerStatus.ACTIVE, T0)
        assert peer.descriptor == descriptor_of(PEER_PARTY, PEER_NAME)
        assert find_peer_by_certificate(session, peer.tls_cert_sha256).party_id == PEER_PARTY
        assert [p.party_id for p in list_peers(session)] == [PEER_PARTY, "KZ-MVD"]


def test_peer_registered_twice_is_duplicate(db: Database) -> None:
    with db.session() as session:
        register_peer(session)
        with pytest.raises(DuplicateError):
            register_peer(session)
        # The same pinned certificate under another party id is refused too.
        with pytest.raises(DuplicateError):
            add_peer(
                session,
                party_id="XX",
                name="Самозванец",
                endpoint_url="https://xx.example",
                tls_cert_sha256=get_peer(session, PEER_PARTY).tls_cert_sha256,
                descriptor="{}",
                now=T0,
            )
        # The refused inserts did not spoil the transaction.
        assert get_peer(session, PEER_PARTY).name == PEER_NAME
    with db.session(readonly=True) as session:
        assert len(list_peers(session)) == 1


def test_unknown_peer_not_found(db: Database) -> None:
    with db.session(readonly=True) as session:
        with pytest.raises(NotFound):
            get_peer(session, "nobody")
        with pytest.raises(NotFound):
            find_peer_by_certificate(session, digest(b"unknown certificate"))


def test_malformed_certificate_fingerprint_refused(db: Database) -> None:
    with db.session() as session:
        for fingerprint in ("AB" * 32, "ab" * 31, "../" * 21 + "a", "ab" * 32 + "\n", ""):
            with pytest.raises(InvalidValue):
                add_peer(
                    session,
                    party_id="XX",
                    name="x",
                    endpoint_url="https://xx.example",
                    tls_cert_sha256=fingerprint,
                    descriptor="{}",
                    now=T0,
                )


def test_key_history(db: Database) -> None:
    with db.session() as session:
        for n in (1, 2, 3):
            add_key(
                session,
                key_id=f"seal-{n}",
                kind=KeyKind.SEAL,
                owner="RU-MVD",
                public=ED25519_PUBLIC,
                store_ref=f"/var/lib/accord/keys/seal-{n}.key",
                not_before=at(n * 100),
            )
        add_key(
            session,
            key_id="peer-seal",
            kind=KeyKind.SEAL,
            owner=PEER_PARTY,
            public=ED25519_PUBLIC,
            store_ref=None,
            not_before=T0,
        )
        retire_key(session, "seal-1", now=at(200))
        revoke_key(session, "seal-2", reason="Утрата токена", now=at(250))
        with pytest.raises(InvalidValue):
            retire_key(session, "seal-2", now=at(300))  # Revocation is final.
    with db.session(readonly=True) as session:
        ours = list_keys(session, owner="RU-MVD", kind=KeyKind.SEAL)
        assert [(k.key_id, k.status) for k in ours] == [
            ("seal-1", KeyStatus.RETIRED),
            ("seal-2", KeyStatus.REVOKED),
            ("seal-3", KeyStatus.ACTIVE),
        ]
        assert [k.key_id for k in list_keys(session, status=KeyStatus.ACTIVE)] == [
            "peer-seal",
            "seal-3",
        ]
        revoked = get_key(session, "seal-2")
        assert (revoked.revoked_at, revoked.reason) == (at(250), "Утрата токена")
        assert get_key(session, "seal-1").not_after == at(200)
        assert get_key(session, "peer-seal").store_ref is None
        assert get_key(session, "seal-3").public == ED25519_PUBLIC


def test_key_added_twice_is_duplicate(db: Database) -> None:
    with db.session() as session:
        add_key(
            session,
            key_id="tls-1",
            kind=KeyKind.TLS,
            owner="RU-MVD",
            public={"sha256": digest(b"certificate")},
            store_ref="/var/lib/accord/tls.key",
            not_before=T0,
        )
        with pytest.raises(DuplicateError):
            add_key(
                session,
                key_id="tls-1",
                kind=KeyKind.ENCRYPTION,
                owner="RU-MVD",
                public={},
                store_ref=None,
                not_before=T0,
            )
        assert get_key(session, "tls-1").kind is KeyKind.TLS


def test_private_key_material_refused(db: Database) -> None:
    leaks: list[dict[str, object]] = [
        {**ED25519_PUBLIC, "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"},
        {"keys": [{"kty": "OKP", "private_key": "..."}]},
        {"Seed": "00" * 32},
    ]
    with db.session() as session:
        for public in leaks:
            with pytest.raises(InvalidValue):
                add_key(
                    session,
                    key_id="leak",
                    kind=KeyKind.SIGNATORY,
                    owner="Иванов И.И.",
                    public=public,
                    store_ref=None,
                    not_before=T0,
                )
        with pytest.raises(NotFound):
            get_key(session, "leak")


def test_private_key_in_store_reference_refused(db: Database) -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA...\n-----END PRIVATE KEY-----"
    with db.session() as session, pytest.raises(InvalidValue):
        add_key(
            session,
            key_id="leak",
            kind=KeyKind.SEAL,
            owner="RU-MVD",
            public=ED25519_PUBLIC,
            store_ref=pem,
            not_before=T0,
        )


def test_unknown_key_kind_refused(db: Database) -> None:
    with db.session() as session, pytest.raises(InvalidValue):
        add_key(
            session,
            key_id="k",
            kind="master",  # type: ignore[arg-type]
            owner="RU-MVD",
            public=ED25519_PUBLIC,
            store_ref=None,
            not_before=T0,
        )


def test_user_found_by_token_hash(db: Database) -> None:
    token_hash = digest(b"32 random bytes of the API token")
    with db.session() as session:
        add_user(
            session,
            name="Иванов Иван Иванович",
            role=Role.SIGNATORY,
            clearance="секретно",
            token_sha256=token_hash,
            now=T0,
        )
    with db.session(readonly=True) as session:
        user = find_user_by_token_hash(session, token_hash)
        assert user is not None
        assert (user.name, user.role, user.clearance) == (
            "Иванов Иван Иванович",
            Role.SIGNATORY,
            "секретно",
        )
        assert user.created_at == T0
        assert find_user_by_token_hash(session, digest(b"another token")) is None


def test_disabled_user_is_not_found_by_token(db: Database) -> None:
    token_hash = digest(b"token")
    with db.session() as session:
        add_user(
            session,
            name="Петров",
            role=Role.OPERATOR,
            clearance="ДСП",
            token_sha256=token_hash,
            now=T0,
        )
        get_user(session, "Петров").disabled = True
    with db.session(readonly=True) as session:
        assert find_user_by_token_hash(session, token_hash) is None
        assert get_user(session, "Петров").disabled


def test_user_name_or_token_taken_is_duplicate(db: Database) -> None:
    with db.session() as session:
        add_user(
            session,
            name="Сидоров",
            role=Role.ADMIN,
            clearance="",
            token_sha256=digest(b"1"),
            now=T0,
        )
        with pytest.raises(DuplicateError):
            add_user(
                session,
                name="Сидоров",
                role=Role.AUDITOR,
                clearance="",
                token_sha256=digest(b"2"),
                now=T0,
            )
        with pytest.raises(DuplicateError):
            add_user(
                session,
                name="Кузнецов",
                role=Role.AUDITOR,
                clearance="",
                token_sha256=digest(b"1"),
                now=T0,
            )
    with db.session(readonly=True) as session, pytest.raises(NotFound):
        get_user(session, "Кузнецов")
