"""ORM tables: Modality Worklist: one row per Scheduled Procedure Step (PS3.4 Annex K)."""

from __future__ import annotations

from .models import Base  # noqa: F401  (the one metadata every migration compares against)

__all__: list[str] = []
