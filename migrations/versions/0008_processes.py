"""Several processes on one index: their registrations and the commitment claims.

Revision ID: 0008_processes
Revises: 0007_unreferenced_file
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_processes"
down_revision: str | None = "0007_unreferenced_file"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # minipacs/index/models_processes.py and CommitmentTransaction.claimed_by.
    op.create_table(
        "server_process",
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("address", sa.String(300), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name="pk_server_process"),
    )
    op.create_index("ix_server_process_heartbeat_at", "server_process", ["heartbeat_at"])
    op.add_column("commitment_transaction",
                  sa.Column("claimed_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("commitment_transaction") as batch:
        batch.drop_column("claimed_by")
    op.drop_table("server_process")
