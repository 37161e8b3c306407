"""Named registries of generators, judges, persona sources and retrievers.

Each registry fills itself on first use by calling its registration hook on every
plugin. Targets may be lazy ``"module:attr"`` strings, imported only when resolved.
Unknown names get a "did you mean" built from the names that do exist.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from persona_eval.errors import RunError, UnknownNameError, UsageError, plugin_call

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


@dataclass
class Entry:
    name: str
    target: Any
    plugin: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    _resolved: Any = field(default=None, repr=False)

    def load(self) -> Any:
        if self._resolved is None:
            self._resolved = resolve_target(self.target, what=f"{self.name!r} (plugin {self.plugin!r})")
        return self._resolved


def resolve_target(target: Any, *, what: str) -> Any:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - surfaced with the plugin's name
        raise RunError(f"{what} could not be loaded from {target!r}: {type(exc).__name__}: {exc}") from exc
    return obj


class Registry:
    def __init__(self, kind: str, hook: str):
        self.kind = kind
        self.hook = hook
        self._entries: dict[str, Entry] | None = None
        self._aliases: dict[str, str] = {}
        self._generation: int | None = None

    def _fill(self) -> dict[str, Entry]:
        from persona_eval.contracts import plugin_manager as plugins

        # Loading the plugins first (on first use), then comparing load generations: a new
        # load of the plugins makes every registry fill itself again.
        infos = plugins.plugin_infos()
        if self._entries is not None and self._generation == plugins.generation():
            return self._entries
        self._generation = plugins.generation()
        self._entries, self._aliases = {}, {}
        for impl in getattr(plugins.get_plugin_manager().hook, self.hook).get_hookimpls():
            plugin = impl.plugin_name

            def register(name, target, aliases=(), description="", _plugin=plugin):
                self._add(Entry(name, target, _plugin, tuple(aliases), description))
                if _plugin in infos:
                    infos[_plugin].registered.setdefault(self.kind, []).append(name)

            info = infos.get(plugin) or plugins.PluginInfo(plugin, "?", None, None, False)
            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001
                plugins.report_plugin_failure(info, self.hook, exc)
        return self._entries

    def _add(self, entry: Entry) -> None:
        assert self._entries is not None
        if not NAME_PATTERN.match(entry.name):
            raise ValueError(f"invalid {self.kind} name {entry.name!r}: use letters, digits, '_-.' and one optional 'pkg/' prefix")
        if entry.name in self._entries or entry.name in self._aliases:
            existing = self._entries.get(entry.name) or self._entries[self._aliases[entry.name]]
            logger.warning(
                "%s %r from plugin %r is already registered by %r; keeping the first",
                self.kind, entry.name, entry.plugin, existing.plugin,
            )
            return
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases.setdefault(alias, entry.name)

    def names(self) -> list[str]:
        return sorted(self._fill())

    def entries(self) -> list[Entry]:
        return [self._fill()[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        entries = self._fill()
        return name in entries or name in self._aliases

    def entry(self, name: str) -> Entry:
        entries = self._fill()
        canonical = self._aliases.get(name, name)
        if canonical in entries:
            return entries[canonical]
        # A bare name also finds a unique namespaced one ("judge" -> "pkg/judge").
        namespaced = [n for n in entries if n.split("/", 1)[-1] == name]
        if len(namespaced) == 1:
            return entries[namespaced[0]]
        known = sorted(set(entries) | set(self._aliases))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        listing = ", ".join(sorted(entries)) or "none"
        raise UnknownNameError(f"unknown {self.kind} {name!r}{hint}; known {self.kind}s: {listing}")

    def get(self, name: str) -> Any:
        return self.entry(name).load()

    def accepted_options(self, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The part of `options` that the factory of `name` takes as keywords (all of it for ``**kwargs``)."""
        try:
            parameters = inspect.signature(self.get(name)).parameters.values()
        except ValueError:  # no introspectable signature: the call will tell
            return dict(options)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return dict(options)
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        accepted = {p.name for p in parameters if p.kind in kinds}
        return {key: value for key, value in options.items() if key in accepted}

    def create(self, name: str, *args, **kwargs) -> Any:
        factory = self.get(name)
        try:
            inspect.signature(factory).bind(*args, **kwargs)
        except TypeError as exc:
            raise UsageError(f"{self.kind} {name!r} does not accept these options: {exc}") from exc
        except ValueError:  # no introspectable signature (a C callable): just call it
            pass
        entry = self.entry(name)
        return plugin_call(f"{self.kind} {entry.name!r} (plugin {entry.plugin!r})", factory, *args, **kwargs)


generators = Registry("generator", "register_generators")
judges = Registry("judge", "register_judges")
persona_sources = Registry("persona source", "register_persona_sources")
retrievers = Registry("retriever", "register_retrievers")

ALL = (generators, judges, persona_sources, retrievers)


def reset_registries() -> None:
    for registry in ALL:
        registry._entries = None
        registry._aliases = {}


def task_paths() -> list[str]:
    from persona_eval.contracts import plugin_manager as plugins

    paths: list[str] = []

    def per_plugin(plugin: str):
        def register(path) -> None:
            paths.append(str(path))
            plugins.record_registration(plugin, "task path", str(path))

        return {"register": register}

    plugins.call_each("register_task_paths", per_plugin=per_plugin)
    return paths
