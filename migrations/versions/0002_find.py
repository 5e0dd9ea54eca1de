"""C-FIND: index instance (series_pk, sop_class_uid) in place of instance (series_pk).

The composite index serves every lookup by series as the old one did, and covers the
SOPClassesInStudy and NumberOf...RelatedInstances aggregates and SOP Class UID matching
below the study level (PS3.4 C.6.1.1.3) without reading instance rows.

Revision ID: 0002_find
Revises: 0001_initial
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002_find"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Create first: foreign-key checks on series deletes always have an index to use.
    op.create_index("ix_instance_series_pk_sop_class_uid", "instance",
                    ["series_pk", "sop_class_uid"])
    op.drop_index("ix_instance_series_pk", table_name="instance")


def downgrade() -> None:
    op.create_index("ix_instance_series_pk", "instance", ["series_pk"])
    op.drop_index("ix_instance_series_pk_sop_class_uid", table_name="instance")
