"""ORM tables: Storage Commitment Push Model: pending transactions (PS3.4 Annex J)."""

from __future__ import annotations

from .models import Base  # noqa: F401  (the one metadata every migration compares against)

__all__: list[str] = []
