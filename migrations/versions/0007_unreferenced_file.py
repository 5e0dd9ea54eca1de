"""Files no row points to any more, recorded in the transaction that stops pointing to them.

Revision ID: 0007_unreferenced_file
Revises: 0006_short_constraint_name
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_unreferenced_file"
down_revision: str | None = "0006_short_constraint_name"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "unreferenced_file",
        sa.Column("storage_key", sa.String(64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("storage_key", name="pk_unreferenced_file"),
    )


def downgrade() -> None:
    op.drop_table("unreferenced_file")
