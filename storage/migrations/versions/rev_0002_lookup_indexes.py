"""Lookup indexes: the messages that reference a blob (blob garbage collection) and the
replay entries past their expiry (pruning).

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-25
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_message_parts_blob_sha256", "message_parts", ["blob_sha256"])
    op.create_index("ix_replay_expires", "replay", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_replay_expires", table_name="replay")
    op.drop_index("ix_message_parts_blob_sha256", table_name="message_parts")
