"""Which judges a run uses and with which options: parsed and validated once, before any work.

A judge is named on the command line as ``NAME`` (it runs on ``--judge-model``) or
``NAME@MODEL_SPEC`` (its own model), e.g. ``--judge prometheus --judge
gpt-4o@openai:gpt-4o``. ``--judge-option KEY=VALUE`` values go to each judge that takes
them; an option no judge of the run takes is a usage error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from persona_eval.contracts import registry
from persona_eval.contracts.factories import reject_harness_arguments
from persona_eval.contracts.model_spec import parse_model_spec
from persona_eval.errors import UsageError
from persona_eval.limits import check_option_values, check_text


@dataclass(frozen=True)
class JudgeChoice:
    """One judge of a run: its label in records and results, plugin name and model spec."""

    label: str
    name: str
    model: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def parse_judge_choices(values: Sequence[str], default_model: str) -> list[JudgeChoice]:
    """``NAME`` or ``NAME@MODEL_SPEC`` per --judge, checked against the registries."""
    choices: list[JudgeChoice] = []
    for value in values:
        text = (value or "").strip()
        name, at, model = text.partition("@")
        name, model = name.strip(), (model.strip() if at else default_model)
        if not name or (at and not model):
            raise UsageError(f"--judge {value!r}: expected NAME or NAME@BACKEND:MODEL, e.g. gpt-4o@openai:gpt-4o")
        check_text("spec", model, what=f"--judge {name}@..." if at else "--judge-model")
        registry.judges.entry(name)
        spec = parse_model_spec(model, option=f"--judge {name}@" if at else "--judge-model")
        registry.generators.entry(spec.backend)
        choices.append(JudgeChoice(label=text, name=name, model=model))
    labels = [c.label for c in choices]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UsageError(f"--judge {duplicates[0]!r} is given twice; give each judge once (NAME@MODEL to vary the model)")
    return choices


def options_by_judge(choices: Sequence[JudgeChoice], options: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``--judge-option`` values per judge label: each judge gets the options it takes.

    One flag can then serve a mixed panel (``feedback=true`` reaches Prometheus, not GPT-4o);
    an option no judge of the run takes is a usage error, so typos still fail.
    """
    options = dict(options or {})
    check_option_values(options, what="--judge-option")
    reject_harness_arguments(options, what="--judge-option")
    per_judge = {c.label: registry.judges.accepted_options(c.name, options) for c in choices}
    taken = {key for accepted in per_judge.values() for key in accepted}
    unknown = sorted(set(options) - taken)
    if unknown:
        names = ", ".join(sorted({c.name for c in choices}))
        raise UsageError(f"--judge-option {unknown[0]!r}: no judge of this run ({names}) has that option")
    return per_judge
