"""Initial schema: peers, keys, users, messages and their parts, receipts, events, the
outbox and the replay store.

Revision ID: 0001
Revises:
Create Date: 2025-11-25

The column types are spelled out here (not imported from `storage`) so that this revision
keeps creating the same schema whatever the models become later.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.String(200)
_SHA256 = sa.String(64)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "peers",
        sa.Column("party_id", _ID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("endpoint_url", sa.Text(), nullable=False),
        sa.Column("tls_cert_sha256", _SHA256, nullable=False),
        sa.Column("descriptor", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("added_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("party_id", name="pk_peers"),
        sa.UniqueConstraint("tls_cert_sha256", name="uq_peers_tls_cert_sha256"),
    )
    op.create_table(
        "keys",
        sa.Column("key_id", _ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", _ID, nullable=False),
        sa.Column("public", _json(), nullable=False),
        sa.Column("store_ref", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("not_before", _timestamp(), nullable=False),
        sa.Column("not_after", _timestamp(), nullable=True),
        sa.Column("revoked_at", _timestamp(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_keys"),
    )
    op.create_index("ix_keys_owner_kind", "keys", ["owner", "kind"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("clearance", sa.Text(), nullable=False),
        sa.Column("token_sha256", _SHA256, nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_index("ix_users_token_sha256", "users", ["token_sha256"], unique=True)
    op.create_table(
        "messages",
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("sender", _ID, nullable=False),
        sa.Column("recipient", _ID, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("marking", _json(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("created", _timestamp(), nullable=False),
        sa.Column("expires", _timestamp(), nullable=True),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("envelope_sha256", _SHA256, nullable=False),
        sa.Column("header", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("in_reply_to", _ID, nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_messages"),
    )
    op.create_index("ix_messages_direction_created_at", "messages", ["direction", "created_at"])
    op.create_index("ix_messages_in_reply_to", "messages", ["in_reply_to"])
    op.create_table(
        "message_parts",
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("blob_sha256", _SHA256, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.message_id"],
            name="fk_message_parts_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "index", name="pk_message_parts"),
    )
    op.create_table(
        "receipts",
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("received_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.message_id"],
            name="fk_receipts_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name="pk_receipts"),
    )
    op.create_table(
        "message_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("at", _timestamp(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("detail", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.message_id"],
            name="fk_message_events_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_message_events"),
    )
    op.create_index("ix_message_events_message_id_at", "message_events", ["message_id", "at"])
    op.create_table(
        "outbox",
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("peer", _ID, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _timestamp(), nullable=False),
        sa.Column("leased_until", _timestamp(), nullable=True),
        sa.Column("lease_owner", _ID, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.message_id"],
            name="fk_outbox_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["peer"], ["peers.party_id"], name="fk_outbox_peer_peers"),
        sa.PrimaryKeyConstraint("message_id", "peer", name="pk_outbox"),
    )
    op.create_index("ix_outbox_next_attempt_at", "outbox", ["next_attempt_at"])
    op.create_table(
        "replay",
        sa.Column("sender", _ID, nullable=False),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("envelope_sha256", _SHA256, nullable=False),
        sa.Column("seen_at", _timestamp(), nullable=False),
        sa.Column("expires", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("sender", "message_id", name="pk_replay"),
    )


def downgrade() -> None:
    for table in (
        "replay",
        "outbox",
        "message_events",
        "receipts",
        "message_parts",
        "messages",
        "users",
        "keys",
        "peers",
    ):
        op.drop_table(table)
