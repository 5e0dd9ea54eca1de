"""Modality Worklist: one row per Scheduled Procedure Step (PS3.4 Annex K).

Revision ID: 0005_worklist
Revises: 0004_mpps
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_worklist"
down_revision: str | None = "0004_mpps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_INDEXED = (
    "patient_name_folded", "patient_id", "accession_number", "requested_procedure_id",
    "study_instance_uid", "modality", "scheduled_station_ae_title", "sps_start_date",
    "scheduled_performing_physician_name_folded", "sps_id", "sps_status",
)


def upgrade() -> None:
    op.create_table(
        "worklist_step",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_name", sa.String(324), nullable=True),
        sa.Column("patient_name_folded", sa.String(324), nullable=True),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("accession_number", sa.String(16), nullable=True),
        sa.Column("requested_procedure_id", sa.String(16), nullable=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=True),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("scheduled_station_ae_title", sa.String(16), nullable=True),
        sa.Column("sps_start_date", sa.String(8), nullable=True),
        sa.Column("sps_start_time", sa.String(13), nullable=True),
        sa.Column("scheduled_performing_physician_name", sa.String(324), nullable=True),
        sa.Column("scheduled_performing_physician_name_folded", sa.String(324), nullable=True),
        sa.Column("sps_id", sa.String(16), nullable=True),
        sa.Column("sps_status", sa.String(16), nullable=True),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_worklist_step")),
    )
    for column in _INDEXED:
        op.create_index(op.f(f"ix_worklist_step_{column}"), "worklist_step", [column])


def downgrade() -> None:
    for column in _INDEXED:
        op.drop_index(op.f(f"ix_worklist_step_{column}"), table_name="worklist_step")
    op.drop_table("worklist_step")
