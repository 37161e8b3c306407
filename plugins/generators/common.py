"""What the local generator backends (`hf`, `vllm`, `gguf`) share when they read a spec.

Where a model name points (``embedded`` is the bundled SmolLM2 copy), the check of an adapter
folder, the type check of options handed straight to an engine, the importing of an optional
engine with an install hint, the arguments every OpenAI-style sampler takes (`max_tokens`,
`temperature`, a seed when sampling), and the one-line reading of an OpenAI-style error body
(the synchronous path and the Batch API client both report it). Each backend keeps its own option names, defaults and
identity; this module holds only logic written out the same way in several of them. Seeded
sampling is in `sampling`; the quiet switch for transformers' bars in `persona_eval.display.quiet`.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from persona_eval.contracts.records import GenParams
from persona_eval.errors import UsageError


def model_location(model: str) -> tuple[str, str]:
    """(what to load: a folder or a hub id, the name shown and recorded) for a model name."""
    if model == "embedded":
        from persona_eval.plugins.generators.embedded import MODEL_NAME, ensure_embedded_model

        return str(ensure_embedded_model()), f"embedded/{MODEL_NAME}"
    return os.path.expanduser(model), model


def adapter_folder(backend: str, adapter: Any) -> str | None:
    """The absolute path of a PEFT adapter folder, or None; a folder without its config is a usage error."""
    if not adapter:
        return None
    path = os.path.abspath(os.path.expanduser(str(adapter)))
    if not Path(path, "adapter_config.json").exists():
        raise UsageError(f"{backend}: adapter folder {path!r} has no adapter_config.json")
    return path


def check_engine_option(backend: str, key: str, value: Any, types: dict[str, type | tuple[type, ...]],
                        own_keys: Iterable[str]) -> None:
    """A spec option handed to the engine as it is must be one it takes, with the right type.

    `own_keys` are the options the backend reads itself; they only appear in the list of
    known names. A bool is never taken for an int (spec parsing turns "true" into True).
    """
    expected = types.get(key)
    if expected is None:
        known = ", ".join(sorted([*types, *own_keys]))
        raise UsageError(f"{backend}: unknown option {key!r}; known: {known}")
    if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
        raise UsageError(f"{backend}: option {key}={value!r} has the wrong type")


def engine_class(module: str, name: str, install_hint: str):
    """Import an optional engine's class when a model loads; without it, a usage error with the install hint."""
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise UsageError(install_hint) from exc


def sampler_kwargs(params: GenParams, request_seed: int | None = None) -> dict[str, Any]:
    """`max_tokens` and `temperature`, and at temperature above zero the seed.

    A per-request seed (see `sampling.request_seed`) keeps a sample independent of the other
    requests in flight; without one the run's seed is used. Temperature 0 is greedy and
    takes no seed, so greedy arguments do not vary with it.
    """
    kwargs: dict[str, Any] = {"max_tokens": int(params.max_new_tokens), "temperature": float(params.temperature)}
    if params.temperature > 0:
        kwargs["seed"] = int(request_seed if request_seed is not None else params.seed)
    return kwargs


def server_message(raw: bytes) -> str:
    """An OpenAI-style server's error message as one short line (the body itself when it names none)."""
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else (error or data.get("message") or data.get("detail"))
        if message:
            text = str(message)
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")
