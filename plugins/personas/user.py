"""The `user` persona source: personas written by people.

Either one persona for every item (``--persona "The user is ..."``) or a file
(``--persona-file PATH``) mapping test items to persona text:

- JSON Lines: one object a line, ``{"id": "...", "persona": "..."}`` (``item_id`` works
  for ``id``; ``prompt`` instead of an id matches the test prompt, compared with case and
  whitespace normalised); an optional ``split`` (chosen/rejected) limits an entry to one split.
- CSV or TSV: a header with ``persona`` and ``id``/``item_id``/``prompt`` (and ``split``).
- YAML or JSON: a mapping ``{item id: persona text}``, or a list of objects as above.

Items without a persona are an error listing the first few ids, unless
``on_missing="skip"`` (``--on-missing skip``): then their Persona has ``text=None`` and
the persona stage leaves those items out of the run and records which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import PersonaSource
from persona_eval.contracts.records import Example, Persona
from persona_eval.errors import UsageError
from persona_eval.hashing import file_hash, text_hash

logger = logging.getLogger(__name__)

ON_MISSING = ("error", "skip")
ID_KEYS = ("id", "item_id")
SHOW_MISSING = 5


def _normalize(text: str) -> str:
    from persona_eval.plugins.personas.common import normalize_prompt

    return normalize_prompt(text)


@dataclass
class Entry:
    persona: str
    where: str
    item_id: str | None = None
    prompt: str | None = None
    split: str | None = None


def _entry_from_record(record: Any, where: str) -> Entry:
    if not isinstance(record, dict):
        raise UsageError(f"expected an object with 'persona' and 'id' (or 'prompt'), got {type(record).__name__}", where=where)
    persona = record.get("persona")
    if not isinstance(persona, str) or not persona.strip():
        problem = "is missing" if persona is None else ("is empty" if isinstance(persona, str) else f"must be text, got {type(persona).__name__}")
        raise UsageError(f"field 'persona' {problem}", where=where)
    item_id = next((record[k] for k in ID_KEYS if record.get(k) not in (None, "")), None)
    prompt = record.get("prompt")
    if item_id is None and (not isinstance(prompt, str) or not prompt.strip()):
        raise UsageError("each entry needs an 'id' (or 'item_id') or a 'prompt' naming the item", where=where)
    if prompt is not None and not isinstance(prompt, str):
        raise UsageError(f"field 'prompt' must be text, got {type(prompt).__name__}", where=where)
    split = record.get("split")
    if split in ("",):
        split = None
    if split is not None and split not in ("chosen", "rejected"):
        raise UsageError(f"field 'split' must be chosen or rejected, got {split!r}", where=where)
    return Entry(persona=persona.strip(), where=where, item_id=None if item_id is None else str(item_id), prompt=prompt, split=split)


def _read_jsonl(path: Path) -> list[Entry]:
    from persona_eval.storage.readers import read_jsonl_values

    return [_entry_from_record(record, where) for where, record in read_jsonl_values(path, message="malformed JSON")]


def _read_csv(path: Path, delimiter: str) -> list[Entry]:
    from persona_eval.storage.readers import read_csv

    header, rows = read_csv(path, delimiter)
    if "persona" not in header or not ({"prompt", *ID_KEYS} & set(header)):
        raise UsageError(
            f"the header needs a 'persona' column and an 'id', 'item_id' or 'prompt' column; it has: {', '.join(header) or 'nothing'}",
            where=f"{path}:1",
        )
    return [_entry_from_record(row, where) for where, row in rows]


def _yaml_lines(path: Path, text: str):
    """Line numbers of the top-level items of a YAML document (mapping keys or list items)."""
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(root, yaml.MappingNode):
        return {str(k.value): k.start_mark.line + 1 for k, _ in root.value}
    if isinstance(root, yaml.SequenceNode):
        return {i: node.start_mark.line + 1 for i, node in enumerate(root.value)}
    return {}


def _read_structured(path: Path) -> list[Entry]:
    from persona_eval.storage.readers import parse_json, read_text

    text = read_text(path)
    lines: dict[Any, int] = {}
    if path.suffix.lower() == ".json":
        data = parse_json(text, path)
        where = lambda key: f"{path}[{key!r}]" if isinstance(key, str) else f"{path}[{key}]"  # noqa: E731
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
            lines = _yaml_lines(path, text)
        except RecursionError as exc:
            raise UsageError("invalid YAML: nested too deeply", where=str(path)) from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UsageError(f"invalid YAML: {problem}", where=f"{path}:{mark.line + 1}" if mark else str(path)) from exc
        where = lambda key: f"{path}:{lines[key]}" if key in lines else str(path)  # noqa: E731
    if isinstance(data, dict):
        entries = []
        for key, value in data.items():
            if not isinstance(value, str) or not value.strip():
                raise UsageError(f"the persona of item {key!r} must be non-empty text, got {type(value).__name__}", where=where(str(key)))
            entries.append(Entry(persona=value.strip(), where=where(str(key)), item_id=str(key)))
        return entries
    if isinstance(data, list):
        return [_entry_from_record(record, where(i)) for i, record in enumerate(data)]
    raise UsageError("expected a mapping {item id: persona} or a list of {id, persona} objects", where=str(path))


def read_persona_file(path: str | Path) -> list[Entry]:
    from persona_eval.storage.readers import link_problem

    path = Path(path).expanduser()
    if not path.is_file():
        problem = None if path.exists() else link_problem(path)
        if problem:
            raise UsageError(f"persona file {problem}", where=str(path))
        raise UsageError("persona file not found" if not path.exists() else "persona file is not a file", where=str(path))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        entries = _read_jsonl(path)
    elif suffix in (".csv", ".tsv"):
        entries = _read_csv(path, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".yaml", ".yml", ".json"):
        entries = _read_structured(path)
    else:
        raise UsageError(f"unsupported persona file type {suffix or '(none)'!r}: use .jsonl, .csv, .tsv, .yaml or .json", where=str(path))
    if not entries:
        raise UsageError("the persona file holds no personas", where=str(path))
    return entries


class UserPersonas(PersonaSource):
    def __init__(self, task=None, persona_file: str | None = None, persona: str | None = None, on_missing: str = "error"):
        if persona_file and persona is not None:
            raise UsageError("give either --persona-file or --persona, not both")
        if not persona_file and persona is None:
            raise UsageError('the user persona source needs --persona-file PATH or --persona "The user is ..."')
        if on_missing not in ON_MISSING:
            raise UsageError(f"--on-missing must be one of {', '.join(ON_MISSING)}, got {on_missing!r}")
        self.on_missing = on_missing
        self.task = task
        self.persona = None
        self.path: Path | None = None
        self.entries: list[Entry] = []
        if persona is not None:
            if not isinstance(persona, str) or not persona.strip():
                raise UsageError("--persona is empty: write the persona, e.g. \"The user is a nurse and prefers short answers\"")
            self.persona = persona.strip()
            return
        self.path = Path(persona_file).expanduser()
        self.entries = read_persona_file(self.path)
        self._by_id: dict[tuple[str | None, str], Entry] = {}
        self._by_prompt: dict[tuple[str | None, str], Entry] = {}
        for entry in self.entries:
            if entry.item_id is not None:
                table, key = self._by_id, (entry.split, entry.item_id)
            else:
                table, key = self._by_prompt, (entry.split, _normalize(entry.prompt or ""))
            first = table.get(key)
            if first is not None and first.persona != entry.persona:
                label = f"item {entry.item_id!r}" if entry.item_id is not None else f"prompt {entry.prompt!r}"
                raise UsageError(f"{label} has two different personas (first at {first.where})", where=entry.where)
            table.setdefault(key, entry)
        self._hash = file_hash(self.path, 16)

    def identity(self) -> dict[str, Any]:
        if self.persona is not None:
            return {"source": "user", "persona_sha256": text_hash(self.persona), "on_missing": self.on_missing}
        return {
            "source": "user", "file": self.path.name, "file_sha256": self._hash,
            "entries": len(self.entries), "on_missing": self.on_missing,
        }

    def _lookup(self, example: Example, split: str) -> tuple[Entry | None, str | None]:
        for split_key in (split, None):
            entry = self._by_id.get((split_key, example.id))
            if entry is not None:
                return entry, "id"
        prompt = _normalize(example.prompt)
        for split_key in (split, None):
            entry = self._by_prompt.get((split_key, prompt))
            if entry is not None:
                return entry, "prompt"
        return None, None

    def personas(self, examples: Sequence[Example], split: str) -> list[Persona]:
        if self.persona is not None:
            return [Persona(text=self.persona, source="user", provenance={"given": "--persona"}) for _ in examples]
        out, missing = [], []
        for example in examples:
            entry, matched_by = self._lookup(example, split)
            if entry is None:
                missing.append(example.id)
                out.append(Persona(text=None, source="user", provenance={"skipped": f"no persona in {self.path.name}"}))
                continue
            out.append(Persona(text=entry.persona, source="user", provenance={"file": str(self.path), "where": entry.where, "matched_by": matched_by}))
        unknown = self._unknown_ids(examples, split)
        if missing and self.on_missing == "error":
            shown = ", ".join(repr(i) for i in missing[:SHOW_MISSING])
            more = f" and {len(missing) - SHOW_MISSING} more" if len(missing) > SHOW_MISSING else ""
            raise UsageError(
                f"{len(missing)} of {len(examples)} item(s) have no {split} persona in the file: {shown}{more} "
                f"(add them, or pass --on-missing skip to leave them out){'; ' + unknown if unknown else ''}",
                where=str(self.path),
            )
        if missing:
            logger.warning("%d of %d item(s) have no persona in %s and are skipped", len(missing), len(examples), self.path)
        if unknown:
            logger.warning("%s: %s", self.path, unknown)
        return out

    def _unknown_ids(self, examples: Sequence[Example], split: str) -> str:
        """'N id(s) in the file match no item: ...' for ids that name no test item (usually typos), or ''.

        Ids are checked against the task's whole test data where it can be read (a --limit run
        sees only some items), else against the items of this run.
        """
        known = {e.id for e in examples}
        try:
            known |= {e.id for e in self.task.load("test")} if self.task is not None else set()
        except Exception:  # noqa: BLE001 - a task without readable test data: check against this run's items
            pass
        unknown = [e for e in self.entries if e.item_id is not None and e.split in (None, split) and e.item_id not in known]
        if not unknown:
            return ""
        shown = ", ".join(repr(e.item_id) for e in unknown[:SHOW_MISSING])
        more = f" and {len(unknown) - SHOW_MISSING} more" if len(unknown) > SHOW_MISSING else ""
        return f"{len(unknown)} id(s) in the file match no item: {shown}{more}"


@hookimpl
def register_persona_sources(register):
    register("user", UserPersonas, aliases=["user-written"], description="personas written by people (--persona-file or --persona)")
