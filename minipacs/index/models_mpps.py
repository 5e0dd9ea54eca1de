"""ORM tables: Modality Performed Procedure Step instances (PS3.4 Annex F)."""

from __future__ import annotations

from .models import Base  # noqa: F401  (the one metadata every migration compares against)

__all__: list[str] = []
