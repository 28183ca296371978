"""The audit log wired into the node: which leaves name which message, and what this
node witnessed of its peers' logs (the checkpoints it cosigned, the forks it refused).

Revision ID: 0007_audit
Revises: 0006_consent
Create Date: 2026-11-26

The column types are spelled out here (not imported from `storage`) so that this revision
keeps creating the same schema whatever the models become later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007_audit"
down_revision: str | None = "0006_consent"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.String(200)


def _index() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_message_leaves",
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("message_id", "index", name="pk_audit_message_leaves"),
    )
    op.create_table(
        "witnessed_checkpoints",
        sa.Column("party", _ID, nullable=False),
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("cosigned_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("party", "size", name="pk_witnessed_checkpoints"),
    )
    op.create_table(
        "witness_evidence",
        sa.Column("id", _index(), autoincrement=True, nullable=False),
        sa.Column("party", _ID, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detected_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_witness_evidence"),
    )
    op.create_index("ix_witness_evidence_party", "witness_evidence", ["party"])


def downgrade() -> None:
    op.drop_index("ix_witness_evidence_party", table_name="witness_evidence")
    for table in ("witness_evidence", "witnessed_checkpoints", "audit_message_leaves"):
        op.drop_table(table)
