"""YAML with line numbers: parsing a file safely and finding the file and line of any key.

Task files (and the trainers' config files) are read here, so every error about a key can
name the file and line that wrote it, even when the key came from an included base file.
Loading is `yaml.safe_load`'s: a task file never runs code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from persona_eval.errors import UsageError


def _node_mark(root: yaml.Node | None, loc: tuple, exact: bool = False) -> yaml.Mark | None:
    """The mark of the YAML node at a pydantic error location, or of its nearest parent.

    With ``exact``, None unless the whole location is there. A mark's ``name`` is the file the
    node was read from (``parse_yaml`` names it), which differs from the task's own file for a
    key inherited through ``include:``.
    """
    node, mark = root, (root.start_mark if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                return None if exact else mark
            # The key's line: a mapping value starts on the line after its key.
            mark, node = match[0].start_mark, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            mark = node.start_mark
        else:
            return None if exact else mark
    return mark


def _node_line(root: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (or its nearest parent)."""
    mark = _node_mark(root, loc)
    return mark.line + 1 if mark is not None else None


def _node_where(root: yaml.Node | None, loc: tuple, path: Path | str) -> str:
    """FILE:LINE of the node at a location: the file that wrote it (``path`` when unknown)."""
    mark = _node_mark(root, loc)
    if mark is None:
        return str(path)
    return f"{_mark_file(mark, path)}:{mark.line + 1}"


def _mark_file(mark: yaml.Mark, path: Path | str) -> str:
    # PyYAML names a mark "<unicode string>" (or the like) when it was not told the file.
    return mark.name if mark.name and not mark.name.startswith("<") else str(path)


def read_text(path: Path, what: str = "task file") -> str:
    """A whole UTF-8 file; an unreadable or non-UTF-8 file is one line naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=str(path)) from exc
    except OSError as exc:
        raise UsageError(f"cannot read {what}: {exc.strerror}", where=str(path)) from exc


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    return parse_yaml(read_text(path), path)


def parse_yaml(text: str, path: Path | str) -> tuple[Any, yaml.Node | None]:
    """Safe-load YAML text and also compose its node tree (for line numbers in errors)."""
    try:
        data = yaml.safe_load(text)
        loader = yaml.SafeLoader(text)
        # Named marks let an error in a task merged from several files (include:) name the right one.
        loader.name = str(path)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"invalid YAML: {problem}", where=where) from exc
    return data, root
