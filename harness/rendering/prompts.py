"""Rendering model inputs: the generation strategies of the paper, one function for all users.

Strategies are Jinja templates declared per task (defaults in `taskfile.schema.DEFAULT_PROMPTS`):
``baseline`` (prompt only), ``inline`` (persona appended in the first person, how a model
never trained with personas sees one), ``pt`` (prompt + persona fields) and ``pt_fs``
(``pt`` after k exemplars). Evaluation and training both call `render_input`, so the
training input and the evaluation input can never drift apart.

Templates run in Jinja's sandbox: a task file cannot reach Python objects through them.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import Any, Sequence

from persona_eval.contracts.records import Example
from persona_eval.errors import UsageError

_FIRST_PERSON = re.compile(r"^\s*The user is\b", re.IGNORECASE)


def first_person(persona: str) -> str:
    """ "The user is X and prefers Y" -> " I am X and prefers Y" (the paper's inline form)."""
    if not persona:
        return ""
    if _FIRST_PERSON.match(persona):
        return _FIRST_PERSON.sub(" I am", persona, count=1)
    return " " + persona.strip()


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["first_person"] = first_person
    return env


@lru_cache(maxsize=256)
def compile_template(source: str):
    from jinja2 import TemplateSyntaxError

    try:
        return _environment().from_string(source)
    except TemplateSyntaxError as exc:
        raise UsageError(f"template syntax error: {exc.message} (template line {exc.lineno})") from exc


def render_template(source: str, **variables: Any) -> str:
    from jinja2 import UndefinedError
    from jinja2.exceptions import SecurityError

    try:
        return compile_template(source).render(**variables)
    except UndefinedError as exc:
        raise UsageError(f"template uses an undefined variable: {exc.message}") from exc
    except SecurityError as exc:
        raise UsageError(f"template tried an unsafe operation: {exc}") from exc


def render_input(
    prompts: dict[str, str],
    strategy: str,
    example: Example,
    persona: str = "",
    shots: Sequence[Example] = (),
) -> str:
    """The exact text a model sees for one example under one strategy."""
    if strategy not in prompts:
        raise UsageError(f"unknown strategy {strategy!r}; this task defines: {', '.join(sorted(prompts))}")
    if strategy == "pt_fs":
        rendered_shots = [
            {"input": render_template(prompts["pt"], prompt=s.prompt, persona=s.chosen_persona), "response": s.chosen.strip()}
            for s in shots
        ]
        query = render_template(prompts["pt"], prompt=example.prompt, persona=persona)
        return render_template(prompts["pt_fs"], shots=rendered_shots, query=query, prompt=example.prompt, persona=persona)
    return render_template(prompts[strategy], prompt=example.prompt, persona=persona)


def render_response_prefix(template: str, example: Example, persona: str = "") -> str:
    """The text the reply starts with (e.g. the paper's Mnemonic "Abate sounds like").

    The task's `response_prefix` may use {{ prompt }} and {{ persona }}; a plain string is
    returned as it is. Generators continue after it and return only the continuation, so
    the judged response never contains the prefix.
    """
    if not template or ("{{" not in template and "{%" not in template):
        return template
    return render_template(template, prompt=example.prompt, persona=persona)


def choose_shots(pool: Sequence[Example], k: int, seed: int, exclude_prompt: str) -> list[Example]:
    """k exemplars from the pool, deterministic given the seed, never the query's own prompt."""
    candidates = [e for e in pool if e.prompt.strip() != exclude_prompt.strip()]
    if k <= 0 or not candidates:
        return []
    rng = random.Random(f"{seed}:{exclude_prompt}")
    return rng.sample(candidates, min(k, len(candidates)))
