"""Modality Performed Procedure Step instances (PS3.4 Annex F).

Revision ID: 0004_mpps
Revises: 0003_commitment
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_mpps"
down_revision: str | None = "0003_commitment"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mpps",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("station_ae", sa.String(16), nullable=True),
        sa.Column("start_date", sa.String(8), nullable=True),
        sa.Column("start_time", sa.String(16), nullable=True),
        sa.Column("end_date", sa.String(8), nullable=True),
        sa.Column("end_time", sa.String(16), nullable=True),
        sa.Column("calling_ae", sa.String(16), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_mpps"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_mpps_sop_instance_uid"),
    )
    op.create_index("ix_mpps_status", "mpps", ["status"])
    op.create_index("ix_mpps_patient_id", "mpps", ["patient_id"])
    op.create_index("ix_mpps_station_ae", "mpps", ["station_ae"])
    op.create_index("ix_mpps_start_date", "mpps", ["start_date"])
    op.create_table(
        "mpps_step",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("mpps_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("scheduled_step_id", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["mpps_pk"], ["mpps.pk"], ondelete="CASCADE",
                                name="fk_mpps_step_mpps_pk_mpps"),
        sa.PrimaryKeyConstraint("pk", name="pk_mpps_step"),
    )
    op.create_index("ix_mpps_step_mpps_pk", "mpps_step", ["mpps_pk"])
    op.create_index("ix_mpps_step_study_instance_uid", "mpps_step", ["study_instance_uid"])


def downgrade() -> None:
    op.drop_table("mpps_step")
    op.drop_table("mpps")
