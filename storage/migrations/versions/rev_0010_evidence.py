"""Evidence after key changes: peers' key-change statements kept verbatim (issue 12).

Revision ID: 0010_evidence
Revises: 0008_keys
Create Date: 2026-12-05

The column types are spelled out here (not imported from `storage`) so that this revision
keeps creating the same schema whatever the models become later. Audit leaves of version 2
(`prev`, issue 12) need no change: a leaf is bytes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010_evidence"
down_revision: str | None = "0008_keys"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "peer_key_statements",
        sa.Column("statement_sha256", sa.String(64), nullable=False),
        sa.Column("party", sa.String(200), nullable=False),
        sa.Column("payload_type", sa.String(255), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("statement_sha256", name="pk_peer_key_statements"),
    )
    op.create_index("ix_peer_key_statements_party", "peer_key_statements", ["party"])


def downgrade() -> None:
    op.drop_index("ix_peer_key_statements_party", table_name="peer_key_statements")
    op.drop_table("peer_key_statements")
