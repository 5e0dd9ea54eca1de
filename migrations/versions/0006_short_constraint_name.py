"""The unique constraint of patient_other_id gets a name PostgreSQL accepts.

Revision 0001 first named it ``uq_patient_other_id_patient_pk_other_patient_id_issuer_of_
patient_id`` (69 characters; PostgreSQL allows 63, so 0001 could not run there). 0001 now
creates ``uq_patient_other_id_identity``; this revision renames the constraint of SQLite
databases made before that (SQLite has no ALTER CONSTRAINT: batch mode copies the table).
A database that already has the short name is left alone.

Revision ID: 0006_short_constraint_name
Revises: 0005_worklist
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0006_short_constraint_name"
down_revision: str | None = "0005_worklist"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE: Final = "patient_other_id"
_COLUMNS: Final = ["patient_pk", "other_patient_id", "issuer_of_patient_id"]
_OLD: Final = "uq_patient_other_id_patient_pk_other_patient_id_issuer_of_patient_id"
_NEW: Final = "uq_patient_other_id_identity"


def _rename(old: str, new: str) -> None:
    names = {uq["name"] for uq in sa.inspect(op.get_bind()).get_unique_constraints(_TABLE)}
    if old not in names:
        return
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(new, _COLUMNS)


def upgrade() -> None:
    _rename(_OLD, _NEW)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # the long name exists only there
        _rename(_NEW, _OLD)
