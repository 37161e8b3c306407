"""Stage 1, personas: the test items of a run and the persona each is answered for.

The persona source (gold, retrieved, user, ...) is built from its name and options; a
persona whose text is None means "leave this item out" (``--on-missing skip``). This stage
runs before the run directory exists, so a bad persona file leaves nothing behind. Prompts
and personas longer than `limits.TEXT` are refused here, naming the item (and the file and
line of a user-written persona).
"""

from __future__ import annotations

import logging
from typing import Any

from persona_eval.contracts.factories import build_persona_source
from persona_eval.contracts.records import Example, Persona
from persona_eval.errors import RunError, UsageError, plugin_call
from persona_eval.limits import check_text

logger = logging.getLogger(__name__)


def test_examples(task, limit: int | None) -> list[Example]:
    """The task's test items, the first `limit` of them when a positive limit is given (0: all)."""
    examples = task.load("test")
    if limit is not None:
        if limit < 0:
            raise UsageError("--limit must be zero (all items) or positive")
        if limit > 0:
            examples = examples[:limit]
    check_prompt_lengths(examples)
    return examples


def check_prompt_lengths(examples) -> None:
    """Every item's prompt within `limits.TEXT['prompt']`; the error names the item."""
    for example in examples:
        check_text("prompt", example.prompt, what=f"the prompt of item {example.id!r}")


def check_persona_lengths(name: str, examples, personas) -> None:
    """Every persona within `limits.TEXT['persona']`; the error names the item and, for a file, where it is."""
    for example, persona in zip(examples, personas):
        if persona.text is None:
            continue
        provenance = persona.provenance if isinstance(persona.provenance, dict) else {}
        where = provenance.get("where") or provenance.get("file")
        check_text("persona", persona.text, what=f"the {name} persona of item {example.id!r}",
                   where=str(where) if where else None)


def with_personas(source, name: str, examples: list[Example], split: str) -> tuple[list[Example], list[Persona], list[str]]:
    """Each item with its persona, and the ids of the items the source gave none (left out)."""
    personas = plugin_call(f"persona source {name!r}", source.personas, examples, split)
    if len(personas) != len(examples):
        raise RunError(f"persona source {name!r} returned {len(personas)} personas for {len(examples)} items")
    check_persona_lengths(name, examples, personas)
    skipped = [ex.id for ex, persona in zip(examples, personas) if persona.text is None]
    if not skipped:
        return examples, personas, []
    if len(skipped) == len(examples):
        raise UsageError(f"persona source {name!r} gave no persona for any of the {len(examples)} item(s): nothing to evaluate")
    logger.warning("leaving out %d item(s) without a persona: %s", len(skipped),
                   ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    kept = [(ex, persona) for ex, persona in zip(examples, personas) if persona.text is not None]
    return [ex for ex, _ in kept], [persona for _, persona in kept], skipped


def personas_stage(task, split: str, name: str, options: dict[str, Any], limit: int | None):
    """(persona source, kept examples, their personas, skipped ids) for one run."""
    examples = test_examples(task, limit)
    source = build_persona_source(name, task, **options)
    examples, personas, skipped = with_personas(source, name, examples, split)
    return source, examples, personas, skipped
