"""Storage Commitment Push Model: pending transactions (PS3.4 Annex J).

Revision ID: 0003_commitment
Revises: 0002_find
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op  # noqa: F401  (used once the tables are written)

revision: str = "0003_commitment"
down_revision: str | None = "0002_find"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # TODO(issue 6): tables of minipacs/index/models_commitment.py


def downgrade() -> None:
    pass
