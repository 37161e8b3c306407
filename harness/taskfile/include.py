"""Task-file inheritance: the top-level ``include:`` key, which lays a task file over base files.

``include: _base/common.yaml`` names one base; ``include: [a.yaml, b.yaml]`` names several,
applied in order, so a later base overrides an earlier one and the including file overrides
them all. A path is relative to the folder of the file that holds the ``include:`` (an absolute
path is taken as it is), and a base may include bases of its own. Merging goes key by key: where
both sides hold a mapping the two merge recursively; any other value the including side writes
(a list, a scalar, null) replaces the base's value whole. The ``include`` key itself is dropped
before the schema sees the task.

The merge runs twice over: on the plain data the schema validates, and on the YAML node trees.
Every node's mark carries the name of the file it was read from, so the merged tree says, for
any key of the resolved task, which file wrote it and on which line. Validation errors are
located with it, and so are relative dataset paths (resolved against the folder of the file
that wrote them: see ``loading.py``).

A base is not a task: discovery skips files and folders whose name starts with ``_``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from persona_eval.errors import UsageError

INCLUDE_KEY = "include"


def compose_task(path: Path) -> tuple[Any, yaml.Node | None]:
    """The data and node tree of the task file at ``path`` with all its bases merged in.

    A file without ``include:`` comes back exactly as read. Otherwise the result is a mapping
    without the ``include`` key, and the node tree's marks name the file each key came from.
    """
    return _compose(Path(path), ())


def _compose(path: Path, chain: tuple[Path, ...]) -> tuple[Any, yaml.Node | None]:
    from persona_eval.taskfile.yaml_lines import _read_yaml

    data, root = _read_yaml(path)
    if not isinstance(data, dict) or INCLUDE_KEY not in data:
        return data, root
    chain = (*chain, path)
    merged_data: dict[Any, Any] = {}
    merged_root: yaml.MappingNode | None = None
    for value, where in _include_entries(data[INCLUDE_KEY], root, path):
        base = path.parent / value
        # A cycle is recognised by the file itself, however each step spelled its path.
        seen = [p.resolve() for p in chain]
        if base.resolve() in seen:
            names = [str(p) for p in chain[seen.index(base.resolve()):]] + [str(base)]
            raise UsageError(f"include: cycle {' -> '.join(names)}", where=where)
        if not base.is_file():
            what = "is a folder, not a file" if base.is_dir() else "not found"
            raise UsageError(f"include: base file {value!r} {what} (looked for {base.resolve()})", where=where)
        base_data, base_root = _compose(base, chain)
        if not isinstance(base_data, dict):
            raise UsageError(f"include: base file {value!r} is not a YAML mapping (key: value pairs)", where=where)
        merged_data = merge_data(merged_data, base_data)
        merged_root = merge_nodes(merged_root, base_root)
    own = {k: v for k, v in data.items() if k != INCLUDE_KEY}
    own_root = yaml.MappingNode(root.tag, [(k, v) for k, v in root.value if _key(k) != INCLUDE_KEY],
                                root.start_mark, root.end_mark, flow_style=root.flow_style)
    return merge_data(merged_data, own), merge_nodes(merged_root, own_root)


def _include_entries(value: Any, root: yaml.MappingNode, path: Path) -> list[tuple[str, str]]:
    """(base path as written, FILE:LINE of where it is written) for each base an ``include:`` names."""
    # The key is missing from the node tree only when a YAML merge key (<<) brought it in.
    key, node = next(((k, v) for k, v in root.value if _key(k) == INCLUDE_KEY), (root, None))
    where = f"{path}:{key.start_mark.line + 1}"
    if isinstance(value, str) and value.strip():
        return [(value, where)]
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        # Each entry of a block list is on its own line: point at the entry, not just the key.
        items = node.value if isinstance(node, yaml.SequenceNode) and len(node.value) == len(value) else None
        return [(v, f"{path}:{items[i].start_mark.line + 1}" if items else where) for i, v in enumerate(value)]
    if isinstance(value, list):
        got = "an empty list" if not value else "a list holding " + ", ".join(
            sorted({_kind(v) for v in value if not (isinstance(v, str) and v.strip())}))
    else:
        got = _kind(value)
    raise UsageError(f"include: must be the path of a base file or a list of such paths, got {got}", where=where)


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string"
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def merge_data(base: dict[Any, Any], own: dict[Any, Any]) -> dict[Any, Any]:
    """``own`` laid over ``base``: mappings merge recursively, anything else in ``own`` wins whole.

    The including file's keys come first, in its order, then those only the base has: a task's
    ``raw`` reads like the task file (name first), with what it inherits after.
    """
    merged = {}
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            value = merge_data(base[key], value)
        merged[key] = value
    merged.update((key, value) for key, value in base.items() if key not in own)
    return merged


def merge_nodes(base: yaml.MappingNode | None, own: yaml.MappingNode) -> yaml.MappingNode:
    """The node-tree twin of :func:`merge_data`; a key keeps the node (and so the file and line) of its writer."""
    if base is None:
        return own
    base_nodes = {_key(k): v for k, v in base.value}
    value = []
    for key_node, node in own.value:
        inherited = base_nodes.get(_key(key_node))
        if isinstance(node, yaml.MappingNode) and isinstance(inherited, yaml.MappingNode):
            node = merge_nodes(inherited, node)
        value.append((key_node, node))
    own_keys = {_key(k) for k, _ in own.value}
    value += [(k, v) for k, v in base.value if _key(k) not in own_keys]
    return yaml.MappingNode(own.tag, value, own.start_mark, own.end_mark, flow_style=own.flow_style)


def _key(node: yaml.Node) -> Any:
    # Task keys are plain scalars; any other key node only ever matches itself.
    return node.value if isinstance(node, yaml.ScalarNode) else id(node)
