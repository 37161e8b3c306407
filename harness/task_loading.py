"""Finding, loading and validating task YAML files, and reading their data.

YAML is read with ``yaml.safe_load`` only: a task file can never run code. Every
validation message names the file, the line and the field.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError
from .records import Example
from .util import file_hash, stable_hash

DEFAULT_TASK = "demo"


def _node_line(root: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (or its nearest parent)."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            # The key's line: a mapping value starts on the line after its key.
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=str(path)) from exc
    except OSError as exc:
        raise UsageError(f"cannot read task file: {exc.strerror}", where=str(path)) from exc
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"invalid YAML: {problem}", where=where) from exc
    return data, root


@dataclass
class Task:
    spec: Any  # TaskSpec
    path: Path
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolved(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")

    @cached_property
    def task_hash(self) -> str:
        return stable_hash(self.resolved(), 16)

    def data_path(self, partition: str) -> Path | None:
        """The local file of a data partition, or None when it must come from the hub."""
        value = getattr(self.spec.dataset, partition, None)
        if value is None:
            return None
        if self.spec.dataset.hub is None:
            return (self.base_dir / value).resolve()
        local = _local_copy(self.spec.dataset)
        if local is None:
            return None
        for suffix in (".parquet", ".jsonl", ".json", ".csv"):
            candidate = Path(local) / f"{value}{suffix}"
            if candidate.exists():
                return candidate.resolve()
        raise UsageError(
            f"local copy {local!r} (from ${self.spec.dataset.data_dir_env}) has no file for split {value!r} "
            f"(looked for {value}.parquet, .jsonl, .json, .csv)",
            where=str(self.path),
        )

    @cached_property
    def data_hash(self) -> str:
        parts = {}
        for partition in ("test", "train", "fewshot"):
            path = self.data_path(partition)
            if path is not None and path.exists():
                parts[partition] = file_hash(path, 16)
            elif getattr(self.spec.dataset, partition, None):
                hub = self.spec.dataset.hub
                parts[partition] = {"hub": hub.model_dump() if hub else None, "split": getattr(self.spec.dataset, partition)}
        return stable_hash(parts, 16)

    def load(self, partition: str = "test") -> list[Example]:
        cache = self.__dict__.setdefault("_loaded", {})
        if partition not in cache:
            cache[partition] = _load_examples(self, partition)
        return cache[partition]

    def has_partition(self, partition: str) -> bool:
        return getattr(self.spec.dataset, partition, None) is not None


def _local_copy(dataset) -> str | None:
    if dataset.data_dir_env and os.environ.get(dataset.data_dir_env):
        return os.environ[dataset.data_dir_env]
    return None


def load_task(path: str | os.PathLike) -> Task:
    from pydantic import ValidationError

    from .taskspec import TaskSpec

    path = Path(path)
    data, root = _read_yaml(path)
    if not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        raise UsageError("a task file must be a YAML mapping (key: value pairs)", where=f"{path}:{line}")
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        line = _node_line(root, loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise UsageError(f"{dotted}: {message}{more}", where=f"{path}:{line}" if line else str(path)) from exc
    task = Task(spec=spec, path=path.resolve(), raw=data)
    _check_templates(task, root)
    return task


def _check_templates(task: Task, root) -> None:
    from .prompting import compile_template

    spec = task.spec
    for role in ("test", "baseline"):
        strategy = getattr(spec.strategies, role)
        if strategy not in spec.prompts:
            line = _node_line(root, ("strategies", role))
            raise UsageError(
                f"strategies.{role}: unknown strategy {strategy!r}; the task's prompts define: {', '.join(sorted(spec.prompts))}",
                where=f"{task.path}:{line}",
            )
    templates = {("prompts", k): v for k, v in spec.prompts.items()}
    for name, criterion in spec.judge.criteria.items():
        templates[("judge", "criteria", name, "instruction")] = criterion.instruction
    for loc, template in templates.items():
        try:
            compile_template(template)
        except UsageError as exc:
            line = _node_line(root, loc)
            raise UsageError(f"{'.'.join(loc)}: {exc}", where=f"{task.path}:{line}") from exc


def _read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Records with their location (file:line or file:row) for error messages."""
    if not path.exists():
        raise UsageError("data file not found", where=str(path))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        from .jsonl import iter_jsonl

        records = []
        with open(path, "rb") as handle:
            line_numbers = [i for i, line in enumerate(handle, start=1) if line.strip()]
        for number, record in zip(line_numbers, iter_jsonl(path)):
            records.append((f"{path}:{number}", record))
        return records
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"malformed JSON: {exc}", where=str(path)) from exc
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UsageError("a JSON data file must hold a list of objects", where=str(path))
        return [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    if suffix in (".csv", ".tsv"):
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
                return [(f"{path}:{i}", dict(r)) for i, r in enumerate(reader, start=2)]
        except UnicodeDecodeError as exc:
            raise UsageError(f"not UTF-8 text ({exc.reason})", where=str(path)) from exc
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return [(f"{path}[{i}]", r) for i, r in enumerate(table.to_pylist())]
    raise UsageError(f"unsupported data file type {suffix!r} (use .jsonl, .json, .csv, .tsv or .parquet)", where=str(path))


def _load_hub_records(task: Task, partition: str) -> list[tuple[str, dict[str, Any]]]:
    hub = task.spec.dataset.hub
    split = getattr(task.spec.dataset, partition)
    try:
        import datasets
    except ImportError as exc:
        raise UsageError("loading a hub dataset needs the 'datasets' package: pip install 'persona-eval[data]'") from exc
    try:
        ds = datasets.load_dataset(hub.path, hub.name, revision=hub.revision, split=split)
    except Exception as exc:  # noqa: BLE001 - hub, network and cache errors alike
        hint = f" or set {task.spec.dataset.data_dir_env} to a local copy" if task.spec.dataset.data_dir_env else ""
        raise UsageError(
            f"cannot load hub dataset {hub.path!r} ({hub.name}, split {split}): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
            f"the hub is unreachable and no local copy is configured{hint}",
            where=str(task.path),
        ) from exc
    return [(f"{hub.path}/{split}[{i}]", dict(r)) for i, r in enumerate(ds)]


def _load_examples(task: Task, partition: str) -> list[Example]:
    if not task.has_partition(partition):
        raise UsageError(f"task {task.name!r} has no {partition!r} data (dataset.{partition} is not set)", where=str(task.path))
    path = task.data_path(partition)
    records = _load_hub_records(task, partition) if path is None else _read_records(path)
    fields = task.spec.fields
    examples: list[Example] = []
    seen: dict[str, str] = {}
    required = {"prompt": fields.prompt}
    for index, (where, record) in enumerate(records):
        for role, key in required.items():
            if key not in record or record[key] is None:
                raise UsageError(f"missing field {key!r} (the task's {role} field)", where=where)
        values = {}
        for role in ("prompt", "chosen", "rejected", "chosen_persona", "rejected_persona"):
            key = getattr(fields, role)
            value = record.get(key, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                if isinstance(value, list):
                    from .conversations import flatten_conversation

                    value = flatten_conversation(value, where=where)
                else:
                    raise UsageError(f"field {key!r} must be text, got {type(value).__name__}", where=where)
            values[role] = value
        item_id = str(record[fields.id]) if fields.id and record.get(fields.id) not in (None, "") else f"{partition}-{index}"
        if item_id in seen:
            raise UsageError(f"duplicate id {item_id!r} (first at {seen[item_id]})", where=where)
        seen[item_id] = where
        mapped = {getattr(fields, r) for r in values} | {fields.id}
        extra = {k: v for k, v in record.items() if k not in mapped}
        examples.append(Example(id=item_id, extra=extra, **values))
    if not examples:
        raise UsageError(f"no items in the {partition} data", where=str(path or task.path))
    return examples


# ---- discovery -------------------------------------------------------------------------


def task_search_paths(include_paths: list[str] | None = None) -> list[Path]:
    from .registry import task_paths

    paths = [Path(p) for p in (include_paths or [])]
    env = os.environ.get("PERSONA_EVAL_TASK_PATH")
    if env:
        paths += [Path(p) for p in env.split(os.pathsep) if p]
    paths += [Path(p) for p in task_paths()]
    return paths


def discover_tasks(include_paths: list[str] | None = None) -> dict[str, Path]:
    """Task name -> YAML path, across include paths, $PERSONA_EVAL_TASK_PATH and plugins."""
    found: dict[str, Path] = {}
    for root in task_search_paths(include_paths):
        if not root.exists():
            continue
        for yaml_path in sorted(root.rglob("*.yaml")):
            try:
                data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and isinstance(data.get("name"), str) and "dataset" in data:
                found.setdefault(data["name"], yaml_path)
    return found


def resolve_task(name_or_path: str | None, include_paths: list[str] | None = None) -> Task:
    name_or_path = name_or_path or DEFAULT_TASK
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.exists():
            raise UsageError("task file not found", where=str(candidate))
        return load_task(candidate)
    tasks = discover_tasks(include_paths)
    if name_or_path not in tasks:
        import difflib

        close = difflib.get_close_matches(name_or_path, list(tasks), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise UsageError(f"unknown task {name_or_path!r}{hint}; known tasks: {', '.join(sorted(tasks)) or 'none'}")
    return load_task(tasks[name_or_path])
