"""Turning names and specs into plugin instances: generators, judges, persona sources.

Generators are pooled by spec within a process, so a run whose test model, baseline
and judge are all ``hf:embedded`` loads the model once.
"""

from __future__ import annotations

from typing import Any

from persona_eval.contracts import registry
from persona_eval.contracts.interfaces import Generator, Judge, PersonaSource
from persona_eval.contracts.model_spec import parse_model_spec
from persona_eval.contracts.records import GenParams
from persona_eval.errors import UsageError

_POOL: dict[str, Generator] = {}


def build_generator(spec_text: str, *, option: str = "--model") -> Generator:
    spec = parse_model_spec(spec_text, option=option)
    key = str(spec)
    if key not in _POOL:
        _POOL[key] = registry.generators.create(spec.backend, spec.model, **spec.options)
    return _POOL[key]


def generator_origin(spec_text: str) -> str:
    """How an error names a generator: its spec and the plugin that registered its backend."""
    backend = parse_model_spec(spec_text).backend
    return f"generator {spec_text!r} (plugin {registry.generators.entry(backend).plugin!r})"


def judge_origin(label: str, name: str) -> str:
    """How an error names a judge: its label and the plugin that registered it."""
    return f"judge {label!r} (plugin {registry.judges.entry(name).plugin!r})"


def close_generators() -> None:
    for generator in _POOL.values():
        try:
            generator.close()
        finally:
            pass
    _POOL.clear()


def gen_params(spec, seed: int) -> GenParams:
    """GenParams from a task's `generation` block."""
    return GenParams(
        max_new_tokens=spec.max_new_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        seed=seed,
        stop=tuple(spec.stop),
        # None where the block does not set them (older task specs have no such fields).
        min_new_tokens=getattr(spec, "min_new_tokens", None),
        repetition_penalty=getattr(spec, "repetition_penalty", None),
    )


# Judge constructor arguments the harness fills itself: never options.
HARNESS_JUDGE_ARGUMENTS = ("generator", "params")


def reject_harness_arguments(options, *, what: str) -> None:
    """`what` (e.g. ``--judge-option``) may not set a judge argument the harness fills."""
    reserved = [name for name in HARNESS_JUDGE_ARGUMENTS if name in options]
    if reserved:
        raise UsageError(f"{what} {reserved[0]!r} is set by the harness (use --judge-model and the task's judge.generation)")


def build_judge(name: str, judge_model: str, task, seed: int, **options: Any) -> Judge:
    generator = build_generator(judge_model, option="--judge-model")
    params = gen_params(task.spec.judge.generation, seed)
    judge_options = {**task.spec.judge.options, **options} if name == task.spec.judge.name else options
    reject_harness_arguments(judge_options, what="judge option")
    # An explicit max_attempts option wins over the task's judge.max_attempts.
    judge_options = {"max_attempts": task.spec.judge.max_attempts, **judge_options}
    return registry.judges.create(name, generator, params=params, **judge_options)


def build_persona_source(name: str, task, **options: Any) -> PersonaSource:
    merged = {**task.spec.persona_source_options, **options} if name == task.spec.persona_source else options
    return registry.persona_sources.create(name, task, **merged)
