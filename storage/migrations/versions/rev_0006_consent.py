"""Consent tokens and consented forwards (agreement art. 7.2, 7.3).

Revision ID: 0006_consent
Revises: 0005_workflow
Create Date: 2026-11-26

The column types are spelled out here (not imported from `storage`) so that this revision
keeps creating the same schema whatever the models become later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006_consent"
down_revision: str | None = "0005_workflow"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.String(200)
_SHA256 = sa.String(64)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("nonce", _SHA256, nullable=False),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("statement_sha256", _SHA256, nullable=False),
        sa.Column("originator", _ID, nullable=False),
        sa.Column("forwarder", _ID, nullable=False),
        sa.Column("third_party", _ID, nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("issued", _timestamp(), nullable=False),
        sa.Column("expires", _timestamp(), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recorded_at", _timestamp(), nullable=False),
        sa.Column("used_at", _timestamp(), nullable=True),
        sa.Column("revoked_at", _timestamp(), nullable=True),
        sa.Column("revocation", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name="pk_consents"),
    )
    op.create_index("ix_consents_message_id", "consents", ["message_id"])
    op.create_table(
        "forwards",
        sa.Column("forward_id", _ID, nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("consent_nonce", _SHA256, nullable=False),
        sa.Column("forwarder", _ID, nullable=False),
        sa.Column("third_party", _ID, nullable=False),
        sa.Column("statement", sa.LargeBinary(), nullable=False),
        sa.Column("consent", sa.LargeBinary(), nullable=False),
        sa.Column("header", sa.LargeBinary(), nullable=False),
        sa.Column("receipt", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("forward_id", name="pk_forwards"),
        sa.UniqueConstraint(
            "direction", "consent_nonce", name="uq_forwards_direction_consent_nonce"
        ),
    )
    op.create_index("ix_forwards_message_id", "forwards", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_forwards_message_id", table_name="forwards")
    op.drop_table("forwards")
    op.drop_index("ix_consents_message_id", table_name="consents")
    op.drop_table("consents")
