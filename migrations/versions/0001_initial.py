"""Initial index schema: patient, study, series, instance and multi-valued keys.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tables in creation order (parents first); downgrade drops them in reverse.
TABLES = (
    "patient", "patient_other_id", "patient_value", "study", "study_value",
    "series", "series_value", "instance",
)


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("pk", name=f"pk_{table}")


def _fk(table: str, column: str, parent: str, cascade: bool = False) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{parent}.pk"], name=f"fk_{table}_{column}_{parent}",
        ondelete="CASCADE" if cascade else None,
    )


def _index(table: str, *columns: str, name: str | None = None) -> None:
    op.create_index(name or f"ix_{table}_{'_'.join(columns)}", table, list(columns))


def _text(name: str, length: int, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _value_table(table: str, owner: str) -> None:
    """One value of a multi-valued key per row (models._ValueMixin)."""
    op.create_table(
        table,
        sa.Column("owner_pk", sa.Integer(), nullable=False),
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("tag", sa.Integer(), nullable=False),
        _text("value", 324, nullable=False),
        _text("value_folded", 324),
        _fk(table, "owner_pk", owner, cascade=True),
        _pk(table),
    )
    _index(table, "owner_pk")
    _index(table, "tag", "value")
    _index(table, "tag", "value_folded")


def upgrade() -> None:
    op.create_table(
        "patient",
        sa.Column("pk", sa.Integer(), nullable=False),
        _text("patient_id", 64, nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(length=64), server_default="",
                  nullable=False),
        _text("patient_name", 324),
        _text("patient_name_folded", 324),
        _text("patient_birth_date", 8),
        _text("patient_birth_time", 13),
        _text("patient_sex", 16),
        sa.Column("attributes", sa.Text(), nullable=False),
        _pk("patient"),
    )
    _index("patient", "patient_birth_date")
    _index("patient", "patient_name")
    _index("patient", "patient_name_folded")
    # Unique only where there is an ID: an empty Patient ID identifies no one.
    op.create_index(
        "uq_patient_identity", "patient", ["patient_id", "issuer_of_patient_id"], unique=True,
        sqlite_where=sa.text("patient_id <> ''"), postgresql_where=sa.text("patient_id <> ''"),
    )

    op.create_table(
        "patient_other_id",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        _text("other_patient_id", 64, nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(length=64), server_default="",
                  nullable=False),
        _fk("patient_other_id", "patient_pk", "patient", cascade=True),
        _pk("patient_other_id"),
        sa.UniqueConstraint(
            "patient_pk", "other_patient_id", "issuer_of_patient_id",
            # Was the naming convention's 69-character name, which PostgreSQL refuses (63 at
            # most); SQLite databases made with it are renamed by revision 0006.
            name="uq_patient_other_id_identity",
        ),
    )
    _index("patient_other_id", "other_patient_id")
    _value_table("patient_value", "patient")

    op.create_table(
        "study",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        _text("study_instance_uid", 64, nullable=False),
        _text("study_date", 8),
        _text("study_time", 13),
        _text("accession_number", 16),
        _text("study_id", 16),
        _text("referring_physician_name", 324),
        _text("referring_physician_name_folded", 324),
        _text("study_description", 64),
        sa.Column("attributes", sa.Text(), nullable=False),
        _fk("study", "patient_pk", "patient"),
        _pk("study"),
        sa.UniqueConstraint("study_instance_uid", name="uq_study_study_instance_uid"),
    )
    for column in ("accession_number", "patient_pk", "referring_physician_name_folded",
                   "study_date", "study_id"):
        _index("study", column)
    _value_table("study_value", "study")

    op.create_table(
        "series",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        _text("series_instance_uid", 64, nullable=False),
        _text("modality", 16),
        sa.Column("series_number", sa.Integer(), nullable=True),
        _text("series_date", 8),
        _text("series_time", 13),
        _text("series_description", 64),
        _text("body_part_examined", 16),
        _text("performed_procedure_step_start_date", 8),
        _text("performed_procedure_step_start_time", 13),
        sa.Column("attributes", sa.Text(), nullable=False),
        _fk("series", "study_pk", "study"),
        _pk("series"),
        sa.UniqueConstraint("series_instance_uid", name="uq_series_series_instance_uid"),
    )
    for column in ("modality", "series_date", "study_pk"):
        _index("series", column)
    _value_table("series_value", "series")

    op.create_table(
        "instance",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        _text("sop_instance_uid", 64, nullable=False),
        _text("sop_class_uid", 64, nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        _text("content_date", 8),
        _text("content_time", 13),
        _text("storage_key", 64, nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        _text("checksum", 80, nullable=False),
        sa.Column("dataset_offset", sa.Integer(), nullable=False),
        _text("transfer_syntax_uid", 64, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        _text("calling_ae_title", 16, nullable=False),
        _text("called_ae_title", 16, nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        _fk("instance", "series_pk", "series"),
        _pk("instance"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_instance_sop_instance_uid"),
        sa.UniqueConstraint("storage_key", name="uq_instance_storage_key"),
    )
    _index("instance", "series_pk")
    _index("instance", "sop_class_uid")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # drops its indexes with it
