"""The `file` generator: precomputed outputs, so published responses can be judged without a model.

Spec: ``file:PATH[,key=id|prompt][,strip_end=true][,id_field=F][,prompt_field=F][,response_field=F]``.

PATH is read whole (it is small next to a model) as:
- JSON: an array of objects (the paper's ``[{"prompt", "response"}, ...]`` included), or an
  object mapping item id -> response text (or -> an object with a response field);
- JSON Lines (``.jsonl``/``.ndjson``): one object per line;
- CSV/TSV (``.csv``/``.tsv``) with a header row.
Fields are found by name unless given: id in ``id, item_id, example_id``; prompt in ``prompt,
input, rendered_input, question``; response in ``response, output, completion, generation,
text, answer``; an optional ``finish_reason`` column is passed through.

A request is matched, first hit wins: by item id (`GenRequest.id`) when the file has that id;
else by its exact rendered input (`GenRequest.prompt`, which is what the paper files hold:
``"Prompt: ...\\nPersona: ...\\nResponse:"``) against the file's prompt; else by the same text
with whitespace normalized; else by the raw question (the text after the last ``Prompt:``
up to ``Persona:``/``Response:``, or the whole text) on both sides, which warns because it
ignores the persona. ``key=id`` or ``key=prompt`` restricts matching to ids or to prompts.
Prompts that occur twice with different responses never match (ambiguous). A request that
matches nothing is a `UsageError` naming the file and the first few item ids; the generate stage hands
the whole run to `generate` at once, so it fails before any record is written.

With ``strip_end=true`` (default) an ending end-of-sequence marker such as ``<|end_of_text|>``
is removed (and the reply counts as finished, ``finish_reason="stop"``), then whitespace.
`identity()` is the resolved path plus the sha256 of the file's bytes, so an edited file
never reuses another's cache entries. Generation parameters are ignored.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Sequence

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenRequest, GenResult
from persona_eval.errors import UsageError
from persona_eval.hashing import file_hash

logger = logging.getLogger(__name__)

ID_FIELDS = ("id", "item_id", "example_id")
PROMPT_FIELDS = ("prompt", "input", "rendered_input", "question")
RESPONSE_FIELDS = ("response", "output", "completion", "generation", "text", "answer")
END_MARKERS = ("<|end_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|im_end|>", "<end_of_turn>", "<eos>", "</s>")

_LAST_PROMPT = re.compile(r"(?m)^\s*Prompt:[ \t]?")
_QUESTION_END = re.compile(r"\n\s*(?:Persona|Response):")
_AMBIGUOUS = -1


def _normalize(text: str) -> str:
    return " ".join(text.split())


def raw_question(text: str) -> str:
    """The question inside a rendered input: after the last "Prompt:", before "Persona:"/"Response:"."""
    starts = list(_LAST_PROMPT.finditer(text))
    if not starts:
        return _normalize(text)
    body = text[starts[-1].end():]
    end = _QUESTION_END.search(body)
    return _normalize(body[: end.start()] if end else body)


def strip_end_markers(text: str) -> tuple[str, bool]:
    stripped, found = text.rstrip(), False
    changed = True
    while changed:
        changed = False
        for marker in END_MARKERS:
            if stripped.endswith(marker):
                stripped, found, changed = stripped[: -len(marker)].rstrip(), True, True
    return stripped.strip(), found


class FileGenerator(Generator):
    """Looks responses up in a file of precomputed outputs."""

    preferred_batch_size = 1_000_000
    # A file lookup: nothing for --executor ray to spread (and the file may exist on this machine only).
    distributable = False
    # `generate` only reads the file: the dry-run plan may call it to judge-plan the real responses.
    dry_run_answers = True

    def __init__(
        self,
        model: str,
        key: str | None = None,
        strip_end: bool = True,
        id_field: str | None = None,
        prompt_field: str | None = None,
        response_field: str | None = None,
    ):
        from persona_eval.storage.readers import link_problem, resolve_path

        given = os.path.expanduser(str(model))
        problem = None if os.path.exists(given) else link_problem(given)
        if problem:
            raise UsageError(f"file: the file of precomputed outputs {problem}", where=given)
        self.path = resolve_path(given, "the file of precomputed outputs", prefix="file: ")
        if key not in (None, "auto", "id", "prompt"):
            raise UsageError(f"file: key={key!r}; use key=id or key=prompt")
        self.key = None if key in (None, "auto") else key
        self.strip_end = bool(strip_end)
        if not self.path.is_file():
            raise UsageError("file: no such file of precomputed outputs", where=str(self.path))
        rows = self._read()
        if not rows:
            raise UsageError("file: the file holds no outputs", where=str(self.path))
        self.id_field = self._field(rows, id_field, ID_FIELDS, "id", required=False)
        self.prompt_field = self._field(rows, prompt_field, PROMPT_FIELDS, "prompt", required=False)
        self.response_field = self._field(rows, response_field, RESPONSE_FIELDS, "response", required=True)
        if self.key == "id" and self.id_field is None:
            raise UsageError(f"file: key=id but no id field ({', '.join(ID_FIELDS)}) in the file", where=str(self.path))
        if self.key == "prompt" and self.prompt_field is None:
            raise UsageError(f"file: key=prompt but no prompt field ({', '.join(PROMPT_FIELDS)}) in the file",
                             where=str(self.path))
        if self.id_field is None and self.prompt_field is None:
            raise UsageError(
                f"file: rows need an id ({', '.join(ID_FIELDS)}) or a prompt ({', '.join(PROMPT_FIELDS)}) field",
                where=str(self.path),
            )
        self._results: list[GenResult] = []
        for where, row in rows:
            value = row.get(self.response_field)
            if not isinstance(value, str):
                raise UsageError(f"file: field {self.response_field!r} missing or not text", where=where)
            text, ended = strip_end_markers(value) if self.strip_end else (value.strip(), False)
            finish = row.get("finish_reason") if isinstance(row.get("finish_reason"), str) else ("stop" if ended else None)
            self._results.append(GenResult(text=text, finish_reason=finish))
        self._build_indexes(rows)
        self._identity: dict[str, Any] | None = None

    # -- reading -------------------------------------------------------------------------

    def _read(self) -> list[tuple[str, dict[str, Any]]]:
        """(location, row) pairs; location is "file:line" or "file: element N" (`storage.readers`)."""
        from persona_eval.storage.readers import parse_json, read_csv, read_jsonl_values, read_text

        suffix = self.path.suffix.lower()
        name = str(self.path)
        if suffix in (".jsonl", ".ndjson"):
            rows = read_jsonl_values(self.path, prefix="file: ", message="not valid JSON")
            for where, row in rows:
                if not isinstance(row, dict):
                    raise UsageError("file: each line must be a JSON object", where=where)
            return rows
        if suffix in (".csv", ".tsv"):
            return read_csv(self.path, "\t" if suffix == ".tsv" else ",", prefix="file: ")[1]
        if suffix == ".json":
            return self._json_rows(parse_json(read_text(self.path, prefix="file: "), name, prefix="file: ",
                                              message="not valid JSON"), name)
        raise UsageError(f"file: unknown format {suffix or '(no extension)'!r}; use .json, .jsonl or .csv", where=name)

    @staticmethod
    def _json_rows(data: Any, name: str) -> list[tuple[str, dict[str, Any]]]:
        if isinstance(data, list):
            rows = []
            for index, row in enumerate(data):
                if not isinstance(row, dict):
                    raise UsageError("file: array elements must be objects", where=f"{name}: element {index}")
                rows.append((f"{name}: element {index}", row))
            return rows
        if isinstance(data, dict):
            rows = []
            for item_id, value in data.items():
                where = f"{name}: key {item_id!r}"
                if isinstance(value, str):
                    rows.append((where, {"id": item_id, "response": value}))
                elif isinstance(value, dict):
                    rows.append((where, {"id": item_id, **value}))
                else:
                    raise UsageError("file: values must be response strings or objects", where=where)
            return rows
        raise UsageError("file: JSON must be an array of objects or an object of id -> response", where=name)

    def _field(self, rows, given: str | None, candidates: Sequence[str], what: str, *, required: bool) -> str | None:
        present = set()
        for _, row in rows:
            present.update(row)
        if given is not None:
            if given not in present:
                raise UsageError(f"file: no {what} field {given!r}; fields are {', '.join(sorted(present))}",
                                 where=str(self.path))
            return given
        for candidate in candidates:
            if candidate in present:
                return candidate
        if required:
            raise UsageError(
                f"file: no {what} field (looked for {', '.join(candidates)}; found {', '.join(sorted(present))}); "
                f"name it with {what}_field=", where=str(self.path),
            )
        return None

    # -- indexes -------------------------------------------------------------------------

    def _add(self, index: dict[str, int], key: str, row: int) -> None:
        seen = index.get(key)
        if seen is None:
            index[key] = row
        elif seen != _AMBIGUOUS and self._results[seen].text != self._results[row].text:
            index[key] = _AMBIGUOUS

    def _build_indexes(self, rows) -> None:
        self._by_id: dict[str, int] = {}
        self._by_prompt: dict[str, int] = {}
        self._by_normalized: dict[str, int] = {}
        self._by_question: dict[str, int] = {}
        for number, (where, row) in enumerate(rows):
            if self.id_field is not None and row.get(self.id_field) not in (None, ""):
                item_id = str(row[self.id_field])
                if item_id in self._by_id:
                    raise UsageError(f"file: duplicate id {item_id!r}", where=where)
                self._by_id[item_id] = number
            if self.prompt_field is not None and isinstance(row.get(self.prompt_field), str):
                prompt = row[self.prompt_field]
                self._add(self._by_prompt, prompt, number)
                self._add(self._by_normalized, _normalize(prompt), number)
                self._add(self._by_question, raw_question(prompt), number)

    def lookup(self, request: GenRequest) -> tuple[int | None, str]:
        """(row, how it matched), or (None, why not)."""
        if self.key != "prompt" and str(request.id) in self._by_id:
            return self._by_id[str(request.id)], "id"
        if self.key == "id":
            return None, "no such id"
        ambiguous = False
        for how, index, text in (
            ("prompt", self._by_prompt, request.prompt),
            ("normalized prompt", self._by_normalized, _normalize(request.prompt)),
            ("question", self._by_question, raw_question(request.prompt)),
        ):
            row = index.get(text)
            if row == _AMBIGUOUS:
                ambiguous = True
            elif row is not None:
                return row, how
        return None, "ambiguous prompt" if ambiguous else "no such prompt"

    # -- the Generator interface ---------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {
                "backend": "file",
                "path": str(self.path),
                "sha256": file_hash(self.path),
                "key": self.key or "auto",
                "strip_end": self.strip_end,
                "response_field": self.response_field,
            }
        return self._identity

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        results, missing, by_question = [], [], 0
        for request in requests:
            row, how = self.lookup(request)
            if row is None:
                missing.append((request.id, how))
                continue
            by_question += how == "question"
            found = self._results[row]
            results.append(GenResult(text=found.text, finish_reason=found.finish_reason))
        if missing:
            shown = ", ".join(f"{item_id!r} ({why})" for item_id, why in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise UsageError(
                f"file: {len(missing)} of {len(requests)} item(s) have no response in the file: {shown}{more}",
                where=str(self.path),
            )
        if by_question:
            logger.warning("file: %d item(s) matched %s only by their question, not the full input (persona ignored)",
                           by_question, self.path.name)
        return results


@hookimpl
def register_generators(register):
    register("file", FileGenerator, aliases=["precomputed"], description="precomputed outputs from a JSON/JSONL/CSV file")
