"""Storage Commitment Push Model: pending transactions (PS3.4 Annex J).

Revision ID: 0003_commitment
Revises: 0002_find
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_commitment"
down_revision: str | None = "0002_find"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Tables of minipacs/index/models_commitment.py, names from models.NAMING.
    op.create_table(
        "commitment_transaction",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("transaction_uid", sa.String(length=64), nullable=False),
        sa.Column("requestor_ae_title", sa.String(length=16), nullable=False),
        sa.Column("called_ae_title", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_commitment_transaction"),
        sa.UniqueConstraint("transaction_uid",
                            name="uq_commitment_transaction_transaction_uid"),
    )
    op.create_index("ix_commitment_transaction_state", "commitment_transaction", ["state"])
    op.create_table(
        "commitment_reference",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("transaction_pk", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("failure_reason", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["transaction_pk"], ["commitment_transaction.pk"],
            name="fk_commitment_reference_transaction_pk_commitment_transaction",
            ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk", name="pk_commitment_reference"),
    )
    op.create_index("ix_commitment_reference_transaction_pk", "commitment_reference",
                    ["transaction_pk"])


def downgrade() -> None:
    op.drop_table("commitment_reference")
    op.drop_table("commitment_transaction")
