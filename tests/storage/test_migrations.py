"""Schema migrations: fresh and old databases end at head, rows survive, no drift."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from accord.storage import (
    Database,
    Direction,
    SchemaMismatch,
    get_message,
    get_parts,
    get_peer,
    list_messages,
    record_incoming,
)
from accord.storage._models import metadata
from tests.storage.helpers import MARKING, PEER_NAME, PEER_PARTY, PURPOSE, T0, digest, new_message


def _drift(db: Database, target: sa.MetaData) -> list[object]:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, target))


def test_fresh_database_migrates_to_head(database_url: str) -> None:
    with Database.open(database_url) as db:
        assert db.schema_version() is None
        db.migrate()
        assert db.schema_version() == Database.schema_head()
        db.migrate()  # Idempotent: a node runs it at every start.
        assert db.schema_version() == Database.schema_head()


def test_filled_revision_1_database_keeps_rows_after_migrate(database_url: str) -> None:
    with Database.open(database_url) as db:
        db.migrate("0001")
        assert db.schema_version() == "0001"
        # Rows written as the first release wrote them: plain SQL against revision 1.
        timestamp = sa.DateTime(timezone=True)
        peers = sa.table(
            "peers",
            *(sa.column(c) for c in ("party_id", "name", "endpoint_url", "tls_cert_sha256")),
            *(sa.column(c) for c in ("descriptor", "status")),
            sa.column("added_at", timestamp),
        )
        messages = sa.table(
            "messages",
            *(sa.column(c) for c in ("message_id", "direction", "sender", "recipient", "type")),
            *(sa.column(c) for c in ("purpose", "envelope_sha256", "status")),
            sa.column("marking", sa.JSON()),
            sa.column("envelope", sa.LargeBinary()),
            *(sa.column(c, timestamp) for c in ("created", "created_at", "updated_at")),
        )
        parts = sa.table(
            "message_parts", *(sa.column(c) for c in ("message_id", "index", "blob_sha256", "size"))
        )
        with db.engine.begin() as connection:
            connection.execute(
                peers.insert().values(
                    party_id=PEER_PARTY,
                    name=PEER_NAME,
                    endpoint_url="https://by-mvd.example:8443",
                    tls_cert_sha256=digest(b"certificate"),
                    descriptor="{}",
                    status="active",
                    added_at=T0,
                )
            )
            connection.execute(
                messages.insert().values(
                    message_id="m-old",
                    direction="in",
                    sender=PEER_PARTY,
                    recipient="RU-MVD",
                    type="request",
                    purpose=PURPOSE,
                    marking=MARKING,
                    envelope=b"old envelope",
                    envelope_sha256=digest(b"old envelope"),
                    status="received",
                    created=T0,
                    created_at=T0,
                    updated_at=T0,
                )
            )
            connection.execute(
                parts.insert().values(
                    message_id="m-old", index=0, blob_sha256=digest(b"body"), size=4
                )
            )

        db.migrate()

        assert db.schema_version() == Database.schema_head()
        with db.session() as session:
            assert get_peer(session, PEER_PARTY).name == PEER_NAME
            old = get_message(session, "m-old")
            assert (old.purpose, old.marking, old.envelope) == (PURPOSE, MARKING, b"old envelope")
            assert old.created_at == T0
            assert [p.blob_sha256 for p in get_parts(session, "m-old")] == [digest(b"body")]
            # The upgraded database takes new rows beside the old ones.
            record_incoming(session, new_message("m-new", sender=PEER_PARTY), now=T0)
            assert {m.message_id for m in list_messages(session, Direction.IN)} == {
                "m-old",
                "m-new",
            }


def test_models_and_migrations_do_not_drift(db: Database) -> None:
    assert _drift(db, metadata) == []


def test_drift_check_sees_a_difference(db: Database) -> None:
    # The comparison above is only worth something if it notices a change.
    changed = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["peers"].append_column(sa.Column("nickname", sa.Text(), nullable=True))
    changed.tables["outbox"].indexes.clear()
    differences = _drift(db, changed)
    kinds = {d[0] for d in differences if isinstance(d, tuple)}
    assert {"add_column", "remove_index"} <= kinds


def test_database_from_a_newer_release_is_schema_mismatch(db: Database) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaMismatch):
        db.migrate()
