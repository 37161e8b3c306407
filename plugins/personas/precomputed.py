"""The `precomputed` persona source: retrieved personas that ship with the dataset.

The paper's dataset (`nbalepur/persona-tailoring`) carries, for every test item, the persona
of its most similar training prompt on both sides (``chosen_persona_retr`` and
``rejected_persona_retr``). This source serves those columns as they are, so the paper's
"retrieved" setting is reproduced exactly; our live retrieval (`retrieved`) sits beside it.

The columns are named in the task's field map (``fields.chosen_persona_retrieved`` and
``fields.rejected_persona_retrieved``), or per run with the options ``chosen_field`` /
``rejected_field`` (any column of the data, e.g. a persona another pipeline wrote).
An item whose column is empty is an error naming the item, or is left out with
``on_missing: skip``.
"""

from __future__ import annotations

from typing import Any, Sequence

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import PersonaSource
from persona_eval.contracts.records import Example, Persona
from persona_eval.errors import UsageError

ROLE_KEYS = {"chosen": "chosen_persona_retrieved", "rejected": "rejected_persona_retrieved"}


class PrecomputedPersonas(PersonaSource):
    def __init__(self, task=None, chosen_field: str | None = None, rejected_field: str | None = None, on_missing: str = "error"):
        if task is None:
            raise UsageError("the precomputed persona source needs a task")
        if on_missing not in ("error", "skip"):
            raise UsageError(f"precomputed persona source: on_missing must be 'error' or 'skip', got {on_missing!r}")
        fields = task.spec.fields
        self.task = task
        self.on_missing = on_missing
        # Where each column of the data ended up in an Example: a mapped field is an attribute
        # (or, for the retrieved personas, a fixed `extra` key); any other column stays in `extra`.
        self._attributes = {getattr(fields, role): role for role in ("prompt", "chosen", "rejected", "chosen_persona", "rejected_persona")}
        self._attributes.pop(None, None)
        # (column in the data, key in Example.extra or attribute) per side.
        self.columns: dict[str, tuple[str | None, str | None]] = {}
        for side, given in (("chosen", chosen_field), ("rejected", rejected_field)):
            if given:
                given = str(given)
                mapped_as = next((role for role in ROLE_KEYS.values() if getattr(fields, role) == given), None)
                self.columns[side] = (given, mapped_as or given)
            else:
                mapped = getattr(fields, ROLE_KEYS[side])
                self.columns[side] = (mapped, ROLE_KEYS[side] if mapped else None)

    def _value(self, example: Example, column: str, key: str) -> tuple[Any, bool]:
        """(value, present) of a column for one example."""
        if key in example.extra:
            return example.extra[key], True
        if column in self._attributes:
            return getattr(example, self._attributes[column]), True
        return None, False

    def identity(self) -> dict[str, Any]:
        return {"source": "precomputed", "columns": {side: column for side, (column, _) in self.columns.items()},
                "on_missing": self.on_missing}

    def personas(self, examples: Sequence[Example], split: str) -> list[Persona]:
        column, key = self.columns[split]
        if key is None:
            raise UsageError(
                f"task {self.task.name!r} names no precomputed {split} persona column: set "
                f"fields.{ROLE_KEYS[split]} in the task YAML (or the persona source option {split}_field)",
                where=str(self.task.path),
            )
        out = []
        for example in examples:
            value, present = self._value(example, column, key)
            if value is not None and not isinstance(value, str):
                raise UsageError(f"item {example.id!r}: column {column!r} must be text, got {type(value).__name__}")
            text = (value or "").strip()
            if not text:
                if self.on_missing == "skip":
                    out.append(Persona(text=None, source="precomputed", provenance={"item_id": example.id, "missing": True}))
                    continue
                where = "is empty" if present else "is not in the data"
                raise UsageError(f"item {example.id!r} has no precomputed {split} persona (column {column!r} {where})")
            out.append(Persona(text=text, source="precomputed",
                               provenance={"item_id": example.id, "side": split, "column": column}))
        return out


@hookimpl
def register_persona_sources(register):
    register("precomputed", PrecomputedPersonas, aliases=["retrieved-precomputed"],
             description="retrieved personas shipped with the dataset (the paper's chosen/rejected_persona_retr)")
