"""Loading plugins: the pluggy manager and the `persona_eval` entry points.

Built-in plugins are entry points of this very distribution and load exactly like a
third party's. Each entry point loads inside its own try/except, so one broken
plugin costs a warning, not the whole CLI.

Environment:
    PERSONA_EVAL_LOAD_PLUGINS=a,b   load only these third-party plugins (built-ins always load);
                                    set it empty to load none
    PERSONA_EVAL_STRICT_PLUGINS=1   a plugin that fails to load is an error, not a warning
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass, field

import pluggy

from persona_eval.contracts import hookspecs
from persona_eval.errors import UsageError

logger = logging.getLogger("persona_eval.plugins")

ENTRY_POINT_GROUP = "persona_eval"
BUILTIN_MODULE_PREFIX = "persona_eval."


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)


_manager: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}
_generation = 0


def strict_plugins() -> bool:
    return os.environ.get("PERSONA_EVAL_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def _selected_plugins() -> set[str] | None:
    raw = os.environ.get("PERSONA_EVAL_LOAD_PLUGINS")
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def report_plugin_failure(info: PluginInfo, stage: str, exc: BaseException) -> None:
    """A plugin broke while loading or registering: warn, or fail in strict mode."""
    message = f"plugin {info.name!r} failed at {stage}: {type(exc).__name__}: {exc}"
    info.error = info.error or message
    if strict_plugins():
        raise UsageError(message + " (PERSONA_EVAL_STRICT_PLUGINS is set)") from exc
    logger.warning("%s (ignored; set PERSONA_EVAL_STRICT_PLUGINS=1 to make this fatal)", message)


def _new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("persona_eval")
    manager.add_hookspecs(hookspecs)
    return manager


def load_plugins(entry_points=None) -> pluggy.PluginManager:
    """Build a fresh plugin manager from entry points (injectable for tests)."""
    global _manager, _infos
    manager = _new_manager()
    infos: dict[str, PluginInfo] = {}
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    selected = _selected_plugins()
    # Parsing a distribution's METADATA costs ~2 ms; all built-ins share one distribution.
    dist_facts: dict[int, tuple[str, str]] = {}
    for ep in sorted(entry_points, key=lambda e: (not e.value.startswith(BUILTIN_MODULE_PREFIX), e.name)):
        builtin = ep.value.startswith(BUILTIN_MODULE_PREFIX)
        dist = getattr(ep, "dist", None)
        if dist is not None and id(dist) not in dist_facts:
            metadata = dist.metadata
            dist_facts[id(dist)] = (metadata["Name"], metadata["Version"])
        dist_name, dist_version = dist_facts[id(dist)] if dist is not None else (None, None)
        if selected is not None and not builtin and ep.name not in selected and dist_name not in selected:
            continue
        info = PluginInfo(
            name=ep.name,
            module=ep.value,
            distribution=dist_name,
            version=dist_version,
            builtin=builtin,
        )
        infos[ep.name] = info
        try:
            module = ep.load()
            if manager.is_registered(module):
                continue
            manager.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - any plugin error is isolated
            report_plugin_failure(info, "import", exc)
    global _generation
    _manager, _infos = manager, infos
    # Registries compare this number with the one they were filled at and refill when it
    # moved, so a fresh load never serves names from the previous plugin set.
    _generation += 1
    return manager


def get_plugin_manager() -> pluggy.PluginManager:
    if _manager is None:
        load_plugins()
    assert _manager is not None
    return _manager


def generation() -> int:
    """How many times plugins were loaded in this process (registries refill when it changes)."""
    return _generation


def plugin_infos() -> dict[str, PluginInfo]:
    get_plugin_manager()
    return _infos


def call_each(hook_name: str, *, per_plugin=None, after=None, **kwargs) -> list[tuple[str, object]]:
    """Call one hook plugin by plugin, isolating failures; returns (plugin, result) pairs.

    ``per_plugin(name)`` may add keyword arguments for one plugin (e.g. a ``register``
    that records what that plugin registered); ``after(name)`` runs after each success.
    """
    manager = get_plugin_manager()
    results = []
    for impl in getattr(manager.hook, hook_name).get_hookimpls():
        info = _infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "?", None, None, False)
        try:
            extra = per_plugin(impl.plugin_name) if per_plugin else {}
            results.append((impl.plugin_name, impl.function(**kwargs, **extra)))
            if after:
                after(impl.plugin_name)
        except Exception as exc:  # noqa: BLE001
            report_plugin_failure(info, hook_name, exc)
    return results


def record_registration(plugin: str, kind: str, name: str) -> None:
    """Note that a plugin registered something (shown by `persona-eval plugins`)."""
    info = _infos.get(plugin)
    if info is not None and name not in info.registered.setdefault(kind, []):
        info.registered[kind].append(name)


def notify(hook_name: str, **kwargs) -> None:
    """Call an observer hook; an observer's exception is logged and never stops a run."""
    manager = get_plugin_manager()
    for impl in getattr(manager.hook, hook_name).get_hookimpls():
        try:
            impl.function(**kwargs)
        except Exception as exc:  # noqa: BLE001
            logger.warning("observer %s.%s raised %s: %s", impl.plugin_name, hook_name, type(exc).__name__, exc)
