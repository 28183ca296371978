"""The audit log: leaves, stored subtree hashes, the log's state row, signed checkpoints
and their cosignatures.

Revision ID: 0004
Revises: 0003
Create Date: 2025-11-26

The column types are spelled out here (not imported from `storage`) so that this revision
keeps creating the same schema whatever the models become later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.String(200)


def _index() -> sa.types.TypeEngine[int]:
    # A rowid primary key on SQLite, BIGINT elsewhere; never a sequence: indexes are given.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_leaves",
        sa.Column("index", _index(), autoincrement=False, nullable=False),
        sa.Column("leaf", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("appended_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("index", name="pk_audit_leaves"),
    )
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "index", name="pk_audit_nodes"),
    )
    state = op.create_table(
        "audit_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_state"),
    )
    # The one state row exists from the start, so appenders only ever lock it.
    op.bulk_insert(state, [{"id": 1, "size": 0, "frontier": b""}])
    op.create_table(
        "checkpoints",
        sa.Column("size", _index(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_checkpoints"),
    )
    op.create_table(
        "cosignatures",
        sa.Column("checkpoint_size", _index(), autoincrement=False, nullable=False),
        sa.Column("witness", _ID, nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("received_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_size"],
            ["checkpoints.size"],
            name="fk_cosignatures_checkpoint_size_checkpoints",
        ),
        sa.PrimaryKeyConstraint("checkpoint_size", "witness", name="pk_cosignatures"),
    )


def downgrade() -> None:
    for table in ("cosignatures", "checkpoints", "audit_state", "audit_nodes", "audit_leaves"):
        op.drop_table(table)
