"""Helpers for tests that load fixture plugins as entry points of group `persona_eval`.

`fixture_entry_points("good", ...)` gives the installed built-ins plus
``pe_fixture_<name>`` modules from this folder; `restore_plugins()` rebuilds the
global plugin manager from the real entry points, as every test must afterwards.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUP = "persona_eval"
PLUGIN_ENV = ("PERSONA_EVAL_LOAD_PLUGINS", "PERSONA_EVAL_STRICT_PLUGINS")


def builtin_entry_points() -> list[importlib.metadata.EntryPoint]:
    return [ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.value.startswith("persona_eval.")]


def fixture_entry_point(name: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=f"pe_fixture_{name}", group=GROUP)


def fixture_entry_points(*names: str, builtins: bool = True) -> list[importlib.metadata.EntryPoint]:
    return (builtin_entry_points() if builtins else []) + [fixture_entry_point(n) for n in names]


def forget_fixture_modules() -> None:
    for module in [m for m in sys.modules if m.startswith("pe_fixture_")]:
        del sys.modules[module]


def restore_plugins(original_env: dict[str, str | None]) -> None:
    """Rebuild the global plugin manager from the real entry points and the original environment."""
    from persona_eval.contracts import plugin_manager

    for key, value in original_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    forget_fixture_modules()
    plugin_manager.load_plugins()
