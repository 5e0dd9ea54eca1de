"""DESIGN.md "Direction of imports", enforced by walking every module under minipacs/ with ast."""

from __future__ import annotations

import ast
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "minipacs"

# Which minipacs layers each layer may import. "root" is minipacs/__init__.py (__version__).
_EVERY_LAYER = {"root", "proto", "ports", "net", "services", "index", "storage", "config",
                "web", "security"}
ALLOWED_LAYERS: dict[str, set[str]] = {
    "root": set(),
    "proto": {"proto"},  # sans-I/O core: no other minipacs package
    "ports": {"ports", "proto", "root"},
    "net": {"net", "proto", "ports", "root"},
    "services": {"services", "proto", "ports", "root"},
    "index": {"index", "ports", "root"},
    # The HTTP adapter beside net/: over the same services and ports, never the concrete
    # index, storage or network classes (only app/ wires those).
    "web": {"web", "services", "ports", "proto", "root"},
    "storage": {"storage", "ports", "root"},
    # Policy, authentication and audit adapters: on the ports, never on net/ or services/.
    "security": {"security", "ports", "proto", "root"},
    "migrations": {"migrations", "index", "ports", "root"},
    "config": {"config", "ports", "root"},  # the policy types it builds
    "app": _EVERY_LAYER | {"app", "migrations"},  # the composition root
    "cli": {"cli", "app", "config", "root"},
    "main": {"main", "cli", "root"},
}
# Pure, stdlib-only proto modules every layer may import (one grammar, used everywhere).
SHARED_MODULES = {"minipacs.proto.uid"}
# Third-party or stdlib top-level modules a layer must not import.
_IO = {"asyncio", "socket", "selectors", "ssl", "threading", "multiprocessing", "subprocess"}
_SQL = {"sqlalchemy", "aiosqlite", "asyncpg", "alembic", "sqlite3"}
FORBIDDEN_MODULES: dict[str, set[str]] = {
    "proto": _IO | _SQL | {"time", "concurrent", "uvloop", "yaml"},
    "ports": _SQL | {"socket", "selectors", "ssl"},
    "net": _SQL,
    "services": _SQL | {"socket", "selectors", "ssl"},
    "storage": _SQL | {"socket", "selectors", "ssl"},
    "index": {"socket", "selectors", "ssl"},
    "web": _SQL,
    "security": _SQL | {"socket", "selectors", "ssl"},
}
FORBIDDEN_EVERYWHERE = {"pynetdicom"}  # a test peer only, never a dependency
PROTO_THIRD_PARTY = {"pydicom"}  # proto: stdlib + pydicom only
LOGGING_CONFIG_CALLS = {"basicConfig", "dictConfig", "fileConfig"}
LOGGING_CONFIGURERS = {"cli"}  # DESIGN: no logging configuration in library code


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target, resolved to an absolute dotted name."""

    importer: str
    target: str
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str, root: Path) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir()


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"{module} is not a {PACKAGE} module")
    if len(parts) == 1:
        return "root"
    if parts[1:3] in (["ports"], ["services", "ports"]):  # the ports module, wherever it lives
        return "ports"
    if parts[1] == "__main__":
        return "main"
    return parts[1]


def iter_imports(path: Path, root: Path) -> Iterator[Import]:
    importer = module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # Every import counts, TYPE_CHECKING ones included: a type-only edge is still an edge.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = importer if is_package else importer.rpartition(".")[0]
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond top level")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_sub = base.startswith(PACKAGE) and is_module(candidate, root)
                yield Import(importer, candidate if is_sub else base, node.lineno)


def logging_config_calls(path: Path) -> Iterator[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in LOGGING_CONFIG_CALLS:
                yield node.lineno


def find_violations(root: Path) -> list[str]:
    """Every breach of the import rules in the package under `root`, as readable lines."""
    problems: list[str] = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        where = path.relative_to(root).as_posix()
        layer = layer_of(module_name(path, root))
        if layer not in ALLOWED_LAYERS:
            problems.append(f"{where}: layer {layer!r} has no import rules in test_layers.py")
            continue
        if layer not in LOGGING_CONFIGURERS:
            for line in logging_config_calls(path):
                problems.append(f"{where}:{line}: configures logging (only minipacs.cli may)")
        for imp in iter_imports(path, root):
            top = imp.target.split(".")[0]
            at = f"{where}:{imp.line}: {layer} imports {imp.target}"
            if top == PACKAGE and imp.target in SHARED_MODULES:
                continue
            if top == PACKAGE:
                target_layer = layer_of(imp.target)
                if target_layer not in ALLOWED_LAYERS[layer]:
                    problems.append(f"{at} (a {target_layer} module): not allowed")
            elif top in FORBIDDEN_EVERYWHERE:
                problems.append(f"{at}: nothing under {PACKAGE}/ may import {top}")
            elif top in FORBIDDEN_MODULES.get(layer, set()):
                problems.append(f"{at}: {layer} must not use {top}")
            elif (
                layer == "proto"
                and top not in sys.stdlib_module_names
                and top not in PROTO_THIRD_PARTY
            ):
                problems.append(f"{at}: proto may use only the stdlib and pydicom")
    return problems


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the minipacs modules it imports (packages by their ``__init__``)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        targets = graph.setdefault(module_name(path, root), set())
        for imp in iter_imports(path, root):
            if imp.target.split(".")[0] == PACKAGE:
                target = imp.target
                while "." in target and not is_module(target, root):  # `from m import name`
                    target = target.rpartition(".")[0]
                targets.add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or around a loop (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []
    for start in sorted(graph):
        if start in order:
            continue
        # Iterative depth-first search: (module, its successors still to visit).
        work = [(start, iter(sorted(graph.get(start, ()))))]
        order[start] = low[start] = len(order)
        stack.append(start)
        while work:
            node, successors = work[-1]
            step = next(successors, None)
            if step is not None:
                if step not in order:
                    order[step] = low[step] = len(order)
                    stack.append(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in stack:
                    low[node] = min(low[node], order[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == order[node]:
                group = stack[stack.index(node):]
                del stack[stack.index(node):]
                if len(group) > 1 or node in graph.get(node, ()):
                    cycles.append(sorted(group))
    return cycles


def test_minipacs_respects_the_import_direction() -> None:
    modules = {module_name(p, REPO) for p in (REPO / PACKAGE).rglob("*.py")}
    assert {"minipacs", "minipacs.config", "minipacs.cli", "minipacs.__main__"} <= modules
    assert find_violations(REPO) == []


def test_no_import_cycles() -> None:
    """Lazy (function-level) and type-only imports count: a cycle is a cycle."""
    assert find_cycles(import_graph(REPO)) == []


# --- the checker itself: it must catch what it claims to catch ---------------------------


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    for folder in [root / PACKAGE, *(p for p in (root / PACKAGE).rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return root


CLEAN = {
    "proto/pdu.py": "import struct\nfrom pydicom.uid import UID\nfrom . import fsm\n",
    "proto/fsm.py": "import enum\nimport logging\nlogger = logging.getLogger(__name__)\n",
    "proto/uid.py": "import re\n",
    "ports.py": "from typing import Protocol\nfrom minipacs.proto import pdu\n",
    "net/server.py": "import asyncio\nfrom ..proto import pdu\nfrom .. import ports\n",
    "services/dispatch.py": "import asyncio\nfrom minipacs.ports import Index\n",
    "index/adapter.py": "import sqlalchemy\nfrom minipacs import ports\n",
    "storage/files.py": "import os\nfrom minipacs.ports import Storage\n"
                        "from minipacs.proto.uid import is_valid_uid\n",
    "config.py": "import yaml\nfrom minipacs import __version__\nfrom .proto import uid\n",
    "app.py": "from minipacs import config, index, net, services, storage\n",
    "cli.py": "import logging\nlogging.basicConfig()\nfrom minipacs import app\n",
    "__main__.py": "from minipacs.cli import main\n",
}


def test_checker_accepts_a_clean_tree(tmp_path: Path) -> None:
    assert find_violations(make_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("proto/codec.py", "import asyncio\n", "proto must not use asyncio"),
        ("proto/codec.py", "from time import monotonic\n", "proto must not use time"),
        ("proto/codec.py", "import numpy\n", "proto may use only the stdlib and pydicom"),
        ("proto/codec.py", "from minipacs import config\n", "(a config module): not allowed"),
        ("proto/codec.py", "from .. import ports\n", "(a ports module): not allowed"),
        ("net/conn.py", "from ..services import dispatch\n", "(a services module): not allowed"),
        ("net/conn.py", "from minipacs.index.adapter import X\n", "(a index module)"),
        (
            "services/find.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from minipacs.net import x\n",
            "services imports minipacs.net (a net module): not allowed",
        ),
        ("services/find.py", "import sqlalchemy.orm\n", "services must not use sqlalchemy"),
        ("services/find.py", "import socket\n", "services must not use socket"),
        ("services/find.py", "from minipacs import app\n", "(a app module): not allowed"),
        ("index/q.py", "from minipacs.services import find\n", "(a services module)"),
        ("index/q.py", "from minipacs.proto import pdu\n", "(a proto module): not allowed"),
        ("storage/x.py", "from ...minipacs import index\n", "relative import beyond top level"),
        ("storage/x.py", "from minipacs.storage import files\nimport aiosqlite\n", "aiosqlite"),
        ("net/conn.py", "import pynetdicom\n", "nothing under minipacs/ may import pynetdicom"),
        ("config.py", "from minipacs.cli import main\n", "config imports minipacs.cli"),
        ("services/find.py", "import logging\nlogging.basicConfig()\n", "configures logging"),
        ("weird/thing.py", "", "layer 'weird' has no import rules"),
        ("web/routes.py", "from minipacs.index import SqlIndex\n", "(a index module)"),
        ("web/routes.py", "from ..storage import files\n", "(a storage module)"),
        ("web/routes.py", "from minipacs.net import server\n", "(a net module)"),
        ("web/routes.py", "import sqlalchemy\n", "web must not use sqlalchemy"),
    ],
)
def test_checker_catches(tmp_path: Path, name: str, source: str, expected: str) -> None:
    files = dict(CLEAN)
    files[name] = files.get(name, "") + source
    root = make_tree(tmp_path, files)
    try:
        problems = find_violations(root)
    except ValueError as exc:  # an impossible relative import is reported by raising
        problems = [str(exc)]
    assert any(expected in p for p in problems), problems


def test_cycle_finder_catches_direct_and_roundabout_cycles(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "cli/__init__.py": "def main():\n    from minipacs.cli import retrieve\n",
        "cli/retrieve.py": "from minipacs.cli import main\n",
        "a.py": "from minipacs.b import x\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from minipacs import c\n",
        "c.py": "import minipacs.a\n",
        "d.py": "from minipacs.cli import main\nfrom minipacs import a\n",
    })
    assert sorted(find_cycles(import_graph(root))) == [
        ["minipacs.a", "minipacs.b", "minipacs.c"], ["minipacs.cli", "minipacs.cli.retrieve"]]
    assert find_cycles(import_graph(make_tree(tmp_path / "clean", CLEAN))) == []


def test_relative_imports_resolve_from_packages_and_modules(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "net/__init__.py": "from .server import serve\nfrom . import server\n",
            "net/server.py": "from ..proto.pdu import Pdu\nfrom . import conn\n",
            "net/conn.py": "",
            "proto/pdu.py": "",
        },
    )
    init = {i.target for i in iter_imports(root / PACKAGE / "net" / "__init__.py", root)}
    assert init == {"minipacs.net.server"}
    server = {i.target for i in iter_imports(root / PACKAGE / "net" / "server.py", root)}
    assert server == {"minipacs.proto.pdu", "minipacs.net.conn"}
