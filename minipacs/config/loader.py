"""Reading a configuration file: strict YAML (no duplicate keys) into `sections.build`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import yaml

from .model import Config, ConfigError
from .rules import describe, join
from .sections import build

_YAML_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a YAML config file; None gives the embedded defaults."""
    if path is None:
        return build({}, Path.cwd(), None)
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(source), "file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(str(source), "not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(str(source), f"cannot read: {exc.strerror or exc}") from None
    data = _parse_yaml(text, str(source))
    if data is None:  # an empty file: every default
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(source), f"the top level must be a mapping, got {describe(data)}")
    resolved = source.resolve()
    return build(data, resolved.parent, resolved)


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML would keep the last one)."""

    def load_checked(self) -> object:
        node = self.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, "", set())
        return self.construct_document(node)


def _check_duplicate_keys(node: yaml.Node, where: str, seen_nodes: set[int]) -> None:
    if id(node) in seen_nodes:  # aliases may share (or recursively contain) a node
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _YAML_MERGE_TAG:
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            here = join(where, key)
            if isinstance(key_node, yaml.ScalarNode):
                if key in keys:
                    line = key_node.start_mark.line + 1
                    raise ConfigError(here, f"duplicate key (again on line {line})")
                keys.add(key)
            _check_duplicate_keys(value_node, here, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{where}[{index}]", seen_nodes)


def _parse_yaml(text: str, name: str) -> object:
    loader = _StrictLoader(text)
    try:
        return loader.load_checked()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ConfigError(where, f"invalid YAML: {exc.problem or exc.context or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(name, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
