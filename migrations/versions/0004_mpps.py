"""Modality Performed Procedure Step instances (PS3.4 Annex F).

Revision ID: 0004_mpps
Revises: 0003_commitment
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op  # noqa: F401  (used once the tables are written)

revision: str = "0004_mpps"
down_revision: str | None = "0003_commitment"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # TODO(issue 6): tables of minipacs/index/models_mpps.py


def downgrade() -> None:
    pass
