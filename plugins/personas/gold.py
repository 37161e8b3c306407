"""The `gold` persona source: the persona inferred from the test pair itself.

For the chosen split it is the chosen persona, for the rejected split the rejected one.
Gold personas are the paper's upper bound: they were inferred from the very responses
being compared.
"""

from __future__ import annotations

from typing import Any, Sequence

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import PersonaSource
from persona_eval.contracts.records import Example, Persona
from persona_eval.errors import UsageError


class GoldPersonas(PersonaSource):
    def __init__(self, task=None):
        self.field_map = task.spec.fields if task is not None else None

    def identity(self) -> dict[str, Any]:
        return {"source": "gold"}

    def personas(self, examples: Sequence[Example], split: str) -> list[Persona]:
        out = []
        for example in examples:
            text = example.persona_for(split).strip()
            if not text:
                field = getattr(self.field_map, f"{split}_persona", f"{split}_persona") if self.field_map else f"{split}_persona"
                raise UsageError(f"item {example.id!r} has no {split} persona (field {field!r} is empty)")
            out.append(Persona(text=text, source="gold", provenance={"item_id": example.id, "side": split}))
        return out


@hookimpl
def register_persona_sources(register):
    register("gold", GoldPersonas, description="the persona inferred from the test pair (upper bound)")
