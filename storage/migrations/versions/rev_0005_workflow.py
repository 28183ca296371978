"""The request workflow: cases, their steps, need-to-know of confidential cases, and
notices about the agreement itself (agreement art. 4 to 6, 6.3, 7.4, 13).

Revision ID: 0005_workflow
Revises: 0004
Create Date: 2026-11-26

The column types are spelled out here (not imported from `storage`) so that this revision
keeps creating the same schema whatever the models become later.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_workflow"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.String(200)
_NAME = sa.String(32)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("case_id", _ID, nullable=False),
        sa.Column("requesting", _ID, nullable=False),
        sa.Column("requested", _ID, nullable=False),
        sa.Column("state", _NAME, nullable=False),
        sa.Column("opened", _timestamp(), nullable=False),
        sa.Column("urgent_oral", sa.Boolean(), nullable=False),
        sa.Column("confirmation_due", _timestamp(), nullable=True),
        sa.Column("confirmed_at", _timestamp(), nullable=True),
        sa.Column("partially_refused", sa.Boolean(), nullable=False),
        sa.Column("conditions_accepted", sa.Boolean(), nullable=False),
        sa.Column("disclosure_noticed_at", _timestamp(), nullable=True),
        sa.Column("confidential_fact", sa.Boolean(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["messages.message_id"],
            name="fk_cases_case_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", name="pk_cases"),
    )
    op.create_table(
        "case_steps",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("case_id", _ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", _NAME, nullable=False),
        sa.Column("party", _ID, nullable=False),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("from_state", _NAME, nullable=True),
        sa.Column("to_state", _NAME, nullable=False),
        sa.Column("at", _timestamp(), nullable=False),
        sa.Column("detail", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.case_id"], name="fk_case_steps_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_case_steps"),
        sa.UniqueConstraint("case_id", "seq", name="uq_case_steps_case_id_seq"),
    )
    op.create_table(
        "case_access",
        sa.Column("case_id", _ID, nullable=False),
        sa.Column("user_name", _ID, nullable=False),
        sa.Column("granted_by", _ID, nullable=False),
        sa.Column("granted_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.case_id"], name="fk_case_access_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("case_id", "user_name", name="pk_case_access"),
    )
    op.create_table(
        "agreement_notices",
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("peer", _ID, nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("kind", _NAME, nullable=False),
        sa.Column("recorded_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.message_id"],
            name="fk_agreement_notices_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name="pk_agreement_notices"),
    )
    op.create_index("ix_agreement_notices_peer", "agreement_notices", ["peer"])


def downgrade() -> None:
    op.drop_index("ix_agreement_notices_peer", table_name="agreement_notices")
    for table in ("agreement_notices", "case_access", "case_steps", "cases"):
        op.drop_table(table)
