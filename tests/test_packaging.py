"""The wheel must carry every package: pyproject.toml lists them by hand (see its comment)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _packages_under(folder: Path, name: str) -> set[str]:
    return {".".join((name, *init.parent.relative_to(folder).parts))
            for init in folder.rglob("__init__.py")}


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    present = _packages_under(ROOT / "minipacs", "minipacs")
    for name, folder in config["package-dir"].items():  # e.g. migrations/ → minipacs.migrations
        present |= _packages_under(ROOT / folder, name)
    assert present == set(config["packages"])
