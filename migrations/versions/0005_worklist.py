"""Modality Worklist: one row per Scheduled Procedure Step (PS3.4 Annex K).

Revision ID: 0005_worklist
Revises: 0004_mpps
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op  # noqa: F401  (used once the tables are written)

revision: str = "0005_worklist"
down_revision: str | None = "0004_mpps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # TODO(issue 6): tables of minipacs/index/models_worklist.py


def downgrade() -> None:
    pass
