"""Key lifecycle: the key-event history and the queue of key announcements to peers.

Revision ID: 0008_keys
Revises: 0007_audit
Create Date: 2026-11-26

The column types are spelled out here (not imported from `storage`) so that this revision
keeps creating the same schema whatever the models become later. The new key status
`overlap` needs no change: statuses are stored as text.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008_keys"
down_revision: str | None = "0007_audit"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.String(200)


def _index() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "key_events",
        sa.Column("id", _index(), nullable=False),
        sa.Column("at", _timestamp(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("key_id", _ID, nullable=False),
        sa.Column("owner", _ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("actor", _ID, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("statement_sha256", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_key_events"),
    )
    op.create_index("ix_key_events_key_id", "key_events", ["key_id"])
    op.create_index("ix_key_events_statement_sha256", "key_events", ["statement_sha256"])
    op.create_table(
        "key_announcements",
        sa.Column("id", _index(), nullable=False),
        sa.Column("peer", _ID, nullable=False),
        sa.Column("payload_type", sa.String(255), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent_at", _timestamp(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_key_announcements"),
    )
    op.create_index("ix_key_announcements_peer_sent_at", "key_announcements", ["peer", "sent_at"])


def downgrade() -> None:
    op.drop_index("ix_key_announcements_peer_sent_at", table_name="key_announcements")
    op.drop_table("key_announcements")
    op.drop_index("ix_key_events_statement_sha256", table_name="key_events")
    op.drop_index("ix_key_events_key_id", table_name="key_events")
    op.drop_table("key_events")
