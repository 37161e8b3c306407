"""Finding, loading and validating task YAML files, and reading their data.

YAML is read with ``yaml.safe_load`` only: a task file can never run code. Every
validation message names the file, the line and the field.

A task file may build on base files with ``include:`` (merging rules in ``include.py``). An
error in the merged task is reported at the file and line where the offending key was written,
in the including file or in the base that set it. A relative dataset path (``dataset.test``,
``train``, ``fewshot`` of a task without ``hub``) resolves against the folder of the file that
wrote that key: a base that names ``data/test.jsonl`` means the file beside the base, whichever
folder includes it, and a task that sets the key itself means the file beside the task. Without
``include:`` that is the task file's folder, as always. Discovery takes a YAML file for a task
when it writes ``name`` itself and has ``dataset`` or ``include``; it skips every file and folder
whose name starts with ``_``, which is where bases live (the paper tasks' in tasks/paper/_base/).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from persona_eval.contracts.records import Example
from persona_eval.errors import UsageError
from persona_eval.hashing import file_hash, stable_hash
from persona_eval.taskfile.include import INCLUDE_KEY, compose_task
from persona_eval.taskfile.yaml_lines import _mark_file, _node_mark, _node_where

DEFAULT_TASK = "demo"
# A local copy of any hub dataset, when neither --data-dir nor the task's own variable names one.
DATA_DIR_ENV = "PERSONA_EVAL_DATA_DIR"
# How a split's files may lie in a local copy of a hub dataset, tried in this order inside
# DIR/<config>/ and then DIR/: our own flat files, `huggingface-cli download` (push_to_hub
# shards), the hub's parquet-converter branch and `Dataset.save_to_disk`.
_LOCAL_PATTERNS = (
    "{split}.parquet", "{split}.jsonl", "{split}.json", "{split}.csv",
    "{split}-*.parquet", "{split}-*.jsonl", "{split}-*.json",
    "{split}/*.parquet", "{split}/state.json",
)


@dataclass
class Task:
    spec: Any  # TaskSpec
    path: Path
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    data_dir: str | None = None  # --data-dir: a local copy of the task's hub dataset
    # Partition -> folder its relative file path resolves against, where that is not the task's
    # own folder (the path was written in a base file pulled in with include:).
    data_dirs: dict[str, Path] = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolved(self) -> dict[str, Any]:
        from persona_eval.taskfile.schema import ReportSpec

        resolved = self.spec.model_dump(mode="json")
        # `report` only says how results are presented, and it came after tasks had hashes:
        # left at its default it stays out of the dump, so every task that does not set it
        # keeps the very task hash (and run keys and caches) it had before the block existed.
        if "report" in resolved and resolved["report"] == ReportSpec().model_dump(mode="json"):
            del resolved["report"]
        return resolved

    @cached_property
    def task_hash(self) -> str:
        return stable_hash(self.resolved(), 16)

    def use_data_dir(self, directory: str | os.PathLike) -> None:
        """Read this hub task's data from a local copy (``--data-dir``) instead of the hub."""
        if self.spec.dataset.hub is None:
            raise UsageError(
                f"--data-dir applies to tasks whose dataset comes from the Hugging Face hub; task {self.name!r} "
                "reads local files named in its YAML", where=str(self.path),
            )
        self.data_dir = str(directory)
        for key in ("data_hash", "_loaded"):
            self.__dict__.pop(key, None)

    def local_copy(self) -> tuple[Path, str] | None:
        """(folder, what named it) of the local copy of a hub dataset, or None to use the hub."""
        dataset = self.spec.dataset
        if dataset.hub is None:
            return None
        for origin, value in (
            ("--data-dir", self.data_dir),
            (f"${dataset.data_dir_env}", os.environ.get(dataset.data_dir_env) if dataset.data_dir_env else None),
            (f"${DATA_DIR_ENV}", os.environ.get(DATA_DIR_ENV)),
        ):
            if value:
                folder = Path(os.path.expanduser(value))
                if not folder.is_dir():
                    raise UsageError(f"local copy of {dataset.hub.path!r} not found: {value!r} (from {origin}) is not a folder")
                return folder.resolve(), origin
        return None

    def local_files(self, partition: str) -> list[Path] | None:
        """The files of a partition: the task's own file, the files of a local copy, or None (hub)."""
        value = getattr(self.spec.dataset, partition, None)
        if value is None:
            return None
        if self.spec.dataset.hub is None:
            from persona_eval.storage.readers import resolve_path

            return [resolve_path(self.data_dirs.get(partition, self.base_dir) / value, "data file")]
        local = self.local_copy()
        if local is None:
            return None
        folder, origin = local
        config = self.spec.dataset.hub.name
        roots = [folder / config] if config and (folder / config).is_dir() else []
        roots.append(folder)
        for root in roots:
            for pattern in _LOCAL_PATTERNS:
                found = sorted(p for p in root.glob(pattern.format(split=glob_escape(value))) if p.is_file())
                if found:
                    return [p.resolve() for p in found]
        # The folder is the place (named once, in front); the message stays one short line.
        inside = f"{config}/ and ./" if config else "./"
        raise UsageError(
            f"this local copy (from {origin}) has no file for split {value!r} of {self.spec.dataset.hub.path!r}"
            f"{f' ({config})' if config else ''}: looked in {inside} for {value}.parquet, {value}.jsonl, {value}.json, "
            f"{value}.csv, {value}-*.parquet, {value}/*.parquet and {value}/ saved with save_to_disk",
            where=str(folder),
        )

    def data_path(self, partition: str) -> Path | None:
        """The (first) local file of a data partition, or None when it must come from the hub."""
        files = self.local_files(partition)
        return files[0] if files else None

    @cached_property
    def data_hash(self) -> str:
        parts = {}
        for partition in ("test", "train", "fewshot"):
            files = self.local_files(partition)
            if files and all(f.exists() for f in files):
                parts[partition] = file_hash(files[0], 16) if len(files) == 1 else [file_hash(f, 16) for f in files]
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


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


def load_task(path: str | os.PathLike) -> Task:
    from pydantic import ValidationError

    from persona_eval.taskfile.schema import TaskSpec

    path = Path(path)
    data, root = compose_task(path)
    if not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        raise UsageError("a task file must be a YAML mapping (key: value pairs)", where=f"{path}:{line}")
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise UsageError(f"{dotted}: {message}{more}", where=_node_where(root, loc, path)) from exc
    task = Task(spec=spec, path=path.resolve(), raw=data, data_dirs=_data_dirs(root, path))
    _check_templates(task, root)
    return task


def _data_dirs(root: yaml.Node | None, path: Path) -> dict[str, Path]:
    """The folders of the files that wrote the dataset's partitions, where not the task file's own."""
    own = path.resolve().parent
    folders = {}
    for partition in ("test", "train", "fewshot"):
        mark = _node_mark(root, ("dataset", partition), exact=True)
        if mark is not None:
            folder = Path(_mark_file(mark, path)).resolve().parent
            if folder != own:
                folders[partition] = folder
    return folders


def _check_templates(task: Task, root) -> None:
    from persona_eval.rendering.prompts import compile_template

    spec = task.spec
    for role in ("test", "baseline"):
        strategy = getattr(spec.strategies, role)
        if strategy not in spec.prompts:
            raise UsageError(
                f"strategies.{role}: unknown strategy {strategy!r}; the task's prompts define: {', '.join(sorted(spec.prompts))}",
                where=_template_where(task, root, ("strategies", role)),
            )
    templates = {("prompts", k): v for k, v in spec.prompts.items()}
    templates[("response_prefix",)] = spec.response_prefix
    for name, criterion in spec.judge.criteria.items():
        templates[("judge", "criteria", name, "instruction")] = criterion.instruction
    for loc, template in templates.items():
        try:
            compile_template(template)
        except UsageError as exc:
            raise UsageError(f"{'.'.join(loc)}: {exc}", where=_template_where(task, root, loc)) from exc


def _template_where(task: Task, root, loc: tuple) -> str:
    # These messages have always named the file by its absolute path; a base's the same way.
    mark = _node_mark(root, loc)
    if mark is None:
        return str(task.path)
    return f"{Path(_mark_file(mark, task.path)).resolve()}:{mark.line + 1}"


def _read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Records with their location (file:line or file[row]) for error messages (`storage.readers`)."""
    from persona_eval.storage.readers import link_problem, read_table

    if not path.exists():
        problem = link_problem(path)
        raise UsageError(f"data file {problem}" if problem else "data file not found", where=str(path))
    if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        raise UsageError(f"unsupported data file type {path.suffix.lower()!r} (use .jsonl, .json, .csv, .tsv or .parquet)",
                         where=str(path))
    return read_table(path)


def _import_datasets():
    try:
        import datasets
    except ImportError as exc:
        raise UsageError("loading a hub dataset (or a local copy of one) needs the 'datasets' package: "
                         "pip install 'persona-eval[data]'") from exc
    return datasets


def _load_local_copy(task: Task, partition: str, files: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """A split of a local copy, read by `datasets` exactly as it reads the hub's files."""
    datasets = _import_datasets()
    first = files[0]
    label = str(first) if len(files) == 1 else f"{first.parent}/{getattr(task.spec.dataset, partition)}"
    try:
        if first.name == "state.json":
            ds = datasets.load_from_disk(str(first.parent))
        else:
            suffix = first.suffix.lower()
            builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}[suffix]
            ds = datasets.load_dataset(builder, data_files={"data": [str(f) for f in files]}, split="data")
    except Exception as exc:  # noqa: BLE001 - arrow, JSON and schema errors alike name the file
        message = str(exc).strip().splitlines()
        raise UsageError(f"cannot read the local copy: {type(exc).__name__}: {message[0] if message else ''}",
                         where=label) from exc
    return [(f"{label}[{i}]", dict(r)) for i, r in enumerate(ds)]


def _load_hub_records(task: Task, partition: str) -> list[tuple[str, dict[str, Any]]]:
    hub = task.spec.dataset.hub
    split = getattr(task.spec.dataset, partition)
    datasets = _import_datasets()
    try:
        ds = datasets.load_dataset(hub.path, hub.name, revision=hub.revision, split=split)
    except Exception as exc:  # noqa: BLE001 - hub, network and cache errors alike
        # The library's own message is long (URLs, retries): logged, not put in the one-line error.
        logging.getLogger(__name__).info("loading %s from the hub failed: %s", hub.path, exc)
        env = task.spec.dataset.data_dir_env
        variables = f"${env} or ${DATA_DIR_ENV}" if env and env != DATA_DIR_ENV else f"${DATA_DIR_ENV}"
        layout = f"DIR/{hub.name}/{split}.parquet" if hub.name else f"DIR/{split}.parquet"
        raise UsageError(
            f"neither the Hugging Face hub nor a local copy of {hub.path!r} is reachable: "
            f"{f'config {hub.name!r}, ' if hub.name else ''}split {split!r}"
            # The short commit (8 hex digits) is enough to tell revisions apart in one line.
            f"{f' at revision {hub.revision[:8]}' if hub.revision else ''} failed on the hub "
            f"({type(exc).__name__}, logged with -v); "
            f"pass --data-dir DIR or set {variables} (e.g. {layout})",
            where=str(task.path),
        ) from exc
    return [(f"{hub.path}/{split}[{i}]", dict(r)) for i, r in enumerate(ds)]


def _load_examples(task: Task, partition: str) -> list[Example]:
    if not task.has_partition(partition):
        raise UsageError(f"task {task.name!r} has no {partition!r} data (dataset.{partition} is not set)", where=str(task.path))
    files = task.local_files(partition)
    path = files[0] if files else None
    if files is None:
        records = _load_hub_records(task, partition)
    elif task.spec.dataset.hub is not None:
        records = _load_local_copy(task, partition, files)
    else:
        records = _read_records(files[0])
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
                    from persona_eval.rendering.conversations import flatten_conversation

                    value = flatten_conversation(value, where=where)
                else:
                    raise UsageError(f"field {key!r} must be text, got {type(value).__name__}", where=where)
            values[role] = value
        # Precomputed retrieved personas travel in `extra` under fixed names (the `precomputed` source).
        retrieved = {}
        for role in ("chosen_persona_retrieved", "rejected_persona_retrieved"):
            key = getattr(fields, role)
            if key:
                value = record.get(key)
                if value is not None and not isinstance(value, str):
                    raise UsageError(f"field {key!r} must be text, got {type(value).__name__}", where=where)
                retrieved[role] = value or ""
        item_id = str(record[fields.id]) if fields.id and record.get(fields.id) not in (None, "") else f"{partition}-{index}"
        if item_id in seen:
            raise UsageError(f"duplicate id {item_id!r} (first at {seen[item_id]})", where=where)
        seen[item_id] = where
        mapped = {getattr(fields, r) for r in values} | {fields.id}
        mapped |= {getattr(fields, r) for r in retrieved}
        extra = {k: v for k, v in record.items() if k not in mapped} | retrieved
        examples.append(Example(id=item_id, extra=extra, **values))
    if not examples:
        raise UsageError(f"no items in the {partition} data", where=str(path or task.path))
    return examples


# ---- discovery -------------------------------------------------------------------------


def task_search_paths(include_paths: list[str] | None = None) -> list[Path]:
    from persona_eval.contracts.registry import task_paths

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
            # Bases for include: live in _-named files or folders; they are parts of tasks, not tasks.
            if any(part.startswith("_") for part in yaml_path.relative_to(root).parts):
                continue
            try:
                data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                continue
            # The name must be the file's own; the dataset may come from a base.
            if isinstance(data, dict) and isinstance(data.get("name"), str) and ("dataset" in data or INCLUDE_KEY in data):
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
