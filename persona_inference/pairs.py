"""Reading preference data for persona inference: local files or Hugging Face datasets.

`load_pairs` turns any preference dataset into `PreferencePair`s (id, prompt, chosen,
rejected, the original record and where it came from). Inputs are a local JSONL / JSON /
CSV / TSV / Parquet file, a local dataset folder, or a hub dataset id (+ config, split,
revision) through `datasets`. Conversation-style fields (lists of chat messages) are
flattened; when a record has no prompt field but its chosen and rejected fields each
hold a whole dialogue (Anthropic HH), the shared beginning becomes the prompt and the
final assistant turns the two responses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persona_eval.errors import UsageError
from persona_eval.hashing import stable_hash
from persona_eval.rendering.conversations import flatten_conversation

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")

# Anthropic HH writes turns as "\n\nHuman: ..." and "\n\nAssistant: ...".
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|User|System):[ \t]?", re.IGNORECASE)
_ASSISTANT_TURN = re.compile(r"(?:^|\n\n)Assistant:[ \t]?", re.IGNORECASE)


@dataclass
class PreferencePair:
    id: str
    prompt: str
    chosen: str
    rejected: str
    record: dict[str, Any] = field(repr=False, default_factory=dict)
    where: str = ""
    # Original values of the mapped fields whose text we derived (flattened or split).
    rewritten: dict[str, Any] = field(repr=False, default_factory=dict)

    def input_hash(self) -> str:
        return stable_hash([self.prompt, self.chosen, self.rejected], 16)


@dataclass(frozen=True)
class FieldNames:
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    id: str | None = "id"


# ---- reading records -------------------------------------------------------------------


def read_local_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(location, record) pairs of a local data file; locations are file:line or file[row]."""
    from persona_eval.storage.readers import link_problem, read_table

    if not path.exists():
        problem = link_problem(path)
        raise UsageError(f"data file {problem}" if problem else "data file not found", where=str(path))
    if path.suffix.lower() not in LOCAL_SUFFIXES:
        raise UsageError(f"unsupported data file type {path.suffix.lower()!r} (use {', '.join(LOCAL_SUFFIXES)})",
                         where=str(path))
    return read_table(path)


def read_hub_records(
    source: str, *, config: str | None, split: str, revision: str | None
) -> list[tuple[str, dict[str, Any]]]:
    try:
        import datasets
    except ImportError as exc:
        raise UsageError("reading a Hugging Face dataset needs 'datasets': pip install 'persona-eval[data]'") from exc
    try:
        ds = datasets.load_dataset(source, config, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - hub, network, cache and split errors alike
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise UsageError(
            f"cannot load dataset {source!r} (config {config}, split {split!r}, revision {revision}): "
            f"{type(exc).__name__}: {detail}"
        ) from exc
    label = Path(source).name if Path(source).exists() else source
    return [(f"{label}/{split}[{i}]", dict(record)) for i, record in enumerate(ds)]


def read_records(
    source: str, *, hf_config: str | None = None, hf_split: str | None = None, revision: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    path = Path(source).expanduser()
    if path.is_file() or (not path.exists() and (path.suffix.lower() in LOCAL_SUFFIXES or path.is_symlink())):
        if hf_config or revision:
            raise UsageError("--hf-config and --revision apply to Hugging Face datasets, not to a local file", where=str(path))
        return read_local_records(path)
    return read_hub_records(source, config=hf_config, split=hf_split or "train", revision=revision)


# ---- conversations ---------------------------------------------------------------------


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(turn, (dict, str)) for turn in value)


def _strip_dialogue_text(text: str) -> str:
    """A single human turn becomes its bare text; a longer dialogue keeps its speaker labels."""
    text = text.strip()
    turns = list(_TURN.finditer(text))
    if len(turns) == 1 and turns[0].group(1).lower() in ("human", "user") and turns[0].start() == 0:
        return text[turns[0].end():].strip()
    return text


def _split_text_dialogues(chosen: str, rejected: str, where: str) -> tuple[str, str, str]:
    """Shared prefix up to the last assistant marker both share -> (prompt, chosen, rejected)."""
    limit = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        limit += 1
    shared = chosen[:limit]
    # The responses may begin with the same words: back off to the last assistant marker.
    markers = list(_ASSISTANT_TURN.finditer(shared))
    if not markers:
        raise UsageError(
            "chosen and rejected hold dialogues with no shared 'Assistant:' turn, so the prompt cannot be split off; "
            "pass --prompt-field", where=where,
        )
    marker = markers[-1]
    prompt = _strip_dialogue_text(chosen[: marker.start()])
    return prompt, chosen[marker.end():].strip(), rejected[marker.end():].strip()


def _message_key(turn: Any) -> Any:
    if isinstance(turn, dict):
        return (str(turn.get("role") or turn.get("from") or "").lower(), str(turn.get("content", turn.get("value", ""))))
    return turn


def _split_message_lists(chosen: list, rejected: list, where: str) -> tuple[list, list, list]:
    shared = 0
    for a, b in zip(chosen, rejected):
        if _message_key(a) != _message_key(b):
            break
        shared += 1
    if shared == len(chosen) or shared == len(rejected):
        # Identical up to the end of one side: the last turn is the response, not the prompt.
        shared = max(0, min(len(chosen), len(rejected)) - 1)
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _response_text(turns: list, where: str) -> str:
    """Assistant turns of a response keep only their text; mixed turns keep their labels."""
    roles = {_message_key(t)[0] for t in turns if isinstance(t, dict)}
    if roles <= {"assistant", "gpt", ""} and all(isinstance(t, dict) for t in turns):
        return "\n\n".join(_message_key(t)[1].strip() for t in turns)
    return flatten_conversation(turns, where=where)


def _prompt_from_messages(turns: list, where: str) -> str:
    if len(turns) == 1 and isinstance(turns[0], dict) and _message_key(turns[0])[0] in ("user", "human"):
        return _message_key(turns[0])[1].strip()
    return flatten_conversation(turns, where=where)


def normalise_record(record: dict[str, Any], names: FieldNames, where: str) -> tuple[str, str, str, dict[str, Any]]:
    """(prompt, chosen, rejected, rewritten originals) of one record, or a UsageError naming `where`."""
    for role in ("chosen", "rejected"):
        key = getattr(names, role)
        if key not in record or record[key] is None:
            raise UsageError(f"missing field {key!r} (--{role}-field)", where=where)
    chosen, rejected = record[names.chosen], record[names.rejected]
    prompt = record.get(names.prompt)
    rewritten: dict[str, Any] = {}
    for role, value in (("chosen", chosen), ("rejected", rejected), ("prompt", prompt)):
        if value is not None and not isinstance(value, str) and not _is_messages(value):
            key = getattr(names, role)
            raise UsageError(f"field {key!r} must be text or a list of chat messages, got {type(value).__name__}", where=where)
    if _is_messages(chosen) != _is_messages(rejected):
        raise UsageError(f"fields {names.chosen!r} and {names.rejected!r} must both be text or both be message lists", where=where)

    if _is_messages(chosen):
        shared, chosen_turns, rejected_turns = _split_message_lists(chosen, rejected, where)
        if prompt is None:
            if not shared:
                raise UsageError(f"no field {names.prompt!r} and no shared opening turns in chosen/rejected to take the prompt from", where=where)
            prompt_text = _prompt_from_messages(shared, where)
        else:
            prompt_text = prompt if isinstance(prompt, str) else _prompt_from_messages(prompt, where)
        chosen_text = _response_text(chosen_turns, where)
        rejected_text = _response_text(rejected_turns, where)
        rewritten = {names.chosen: chosen, names.rejected: rejected}
        if prompt is not None and not isinstance(prompt, str):
            rewritten[names.prompt] = prompt
    elif prompt is None:
        if not (_ASSISTANT_TURN.search(chosen) and _ASSISTANT_TURN.search(rejected)):
            raise UsageError(f"missing field {names.prompt!r} (--prompt-field)", where=where)
        prompt_text, chosen_text, rejected_text = _split_text_dialogues(chosen, rejected, where)
        rewritten = {names.chosen: chosen, names.rejected: rejected}
    else:
        prompt_text = prompt if isinstance(prompt, str) else _prompt_from_messages(prompt, where)
        chosen_text, rejected_text = chosen, rejected
        if not isinstance(prompt, str):
            rewritten[names.prompt] = prompt
    for role, text in (("prompt", prompt_text), ("chosen", chosen_text), ("rejected", rejected_text)):
        if not text.strip():
            raise UsageError(f"empty {role} text (field {getattr(names, role)!r})", where=where)
    return prompt_text.strip(), chosen_text.strip(), rejected_text.strip(), rewritten


def pairs_from_records(records: list[tuple[str, dict[str, Any]]], names: FieldNames, *, limit: int | None = None) -> list[PreferencePair]:
    if limit is not None and limit < 0:
        raise UsageError("--limit must be zero (all items) or positive")
    if limit:
        records = records[:limit]
    pairs: list[PreferencePair] = []
    seen: dict[str, str] = {}
    for index, (where, record) in enumerate(records):
        prompt, chosen, rejected, rewritten = normalise_record(record, names, where)
        raw_id = record.get(names.id) if names.id else None
        item_id = str(raw_id) if raw_id not in (None, "") else f"row-{index}"
        if item_id in seen:
            raise UsageError(f"duplicate id {item_id!r} (first at {seen[item_id]}); pass --id-field or make ids unique", where=where)
        seen[item_id] = where
        pairs.append(PreferencePair(item_id, prompt, chosen, rejected, record, where, rewritten))
    if not pairs:
        raise UsageError("the input holds no preference pairs")
    return pairs


def load_pairs(
    source: str,
    *,
    names: FieldNames = FieldNames(),
    hf_config: str | None = None,
    hf_split: str | None = None,
    revision: str | None = None,
    limit: int | None = None,
) -> list[PreferencePair]:
    records = read_records(source, hf_config=hf_config, hf_split=hf_split, revision=revision)
    return pairs_from_records(records, names, limit=limit)


def input_identity(source: str, *, hf_config: str | None, hf_split: str | None, revision: str | None) -> dict[str, Any]:
    """Names the input in output metadata: a file path with its hash, or a hub id with split and revision."""
    path = Path(source).expanduser()
    if path.is_file():
        from persona_eval.hashing import file_hash

        return {"path": str(path.resolve()), "sha256": file_hash(path, 16)}
    return {"dataset": source, "config": hf_config, "split": hf_split or "train", "revision": revision}
