"""Parsing model specs such as ``hf:HuggingFaceTB/SmolLM2-135M-Instruct,dtype=bfloat16,adapter=out/``.

The part before the first colon names a generator backend; the rest is the model
name followed by comma-separated ``key=value`` options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from persona_eval.errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    backend: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        opts = "".join(f",{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.backend}:{self.model}{opts}"


def _coerce(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _key_value(text: str) -> tuple[str, Any] | None:
    """``key=value`` as (key, coerced value); None when it is not of that form."""
    key, eq, value = (text or "").partition("=")
    if not eq or not key.strip():
        return None
    return key.strip(), _coerce(value.strip())


def parse_options(values, *, option: str) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` command-line options as a dict (values coerced like spec options)."""
    options: dict[str, Any] = {}
    for text in values:
        pair = _key_value(text)
        if pair is None:
            raise UsageError(f"{option} {text!r}: expected KEY=VALUE, e.g. {option} feedback=true")
        options[pair[0]] = pair[1]
    return options


def parse_model_spec(text: str, *, option: str = "--model") -> ModelSpec:
    text = (text or "").strip()
    backend, sep, rest = text.partition(":")
    if not sep or not backend or not rest:
        raise UsageError(
            f"{option} {text!r}: expected BACKEND:MODEL[,key=value...], e.g. hf:embedded or file:outputs.json"
        )
    model, *pairs = rest.split(",")
    options: dict[str, Any] = {}
    for pair in pairs:
        parsed = _key_value(pair)
        if parsed is None:
            raise UsageError(f"{option} {text!r}: option {pair!r} is not key=value")
        options[parsed[0]] = parsed[1]
    return ModelSpec(backend.strip(), model.strip(), options)
