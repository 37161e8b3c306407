"""The hook specifications every plugin, built-in or third-party, implements.

Registration hooks receive a `register` callback so one plugin can add many things:

    @hookimpl
    def register_generators(register):
        register("mybackend", "my_pkg.backend:MyGenerator", aliases=["mb"])

A target is either the object itself or a lazy ``"module:attr"`` string, so that
heavy libraries are imported only when that name is actually used.
"""

from __future__ import annotations

import pluggy

__all__ = ['hookspec', 'hookimpl', 'register_generators', 'register_judges', 'register_persona_sources', 'register_retrievers', 'register_task_paths', 'register_commands', 'on_run_start', 'on_sample_end', 'on_run_end']

hookspec = pluggy.HookspecMarker("persona_eval")
hookimpl = pluggy.HookimplMarker("persona_eval")


@hookspec
def register_generators(register):
    """Register generator backends: ``register(name, factory, aliases=())``.

    The factory is called as ``factory(model: str, **options) -> Generator``, where
    ``model`` and ``options`` come from a spec such as ``hf:NAME,dtype=bfloat16``.
    """


@hookspec
def register_judges(register):
    """Register pairwise judges: ``register(name, factory, aliases=())``.

    The factory is called as ``factory(generator, params=GenParams, max_attempts=int,
    **options) -> Judge``; a judge runs on whatever generator backend the user points it at.
    """


@hookspec
def register_persona_sources(register):
    """Register persona sources: ``register(name, factory, aliases=())``.

    The factory is called as ``factory(task, **options) -> PersonaSource``.
    """


@hookspec
def register_retrievers(register):
    """Register retrievers: ``register(name, factory, aliases=())``.

    The factory is called as ``factory(**options) -> Retriever``.
    """


@hookspec
def register_task_paths(register):
    """Register folders holding task YAML files: ``register(path)``."""


@hookspec
def register_commands(cli):
    """Add commands to the ``persona-eval`` click group."""


@hookspec
def on_run_start(run):
    """Observer: a run is about to start. Exceptions are logged, never fatal."""


@hookspec
def on_sample_end(run, record):
    """Observer: one generation or judgment record was written."""


@hookspec
def on_run_end(run, results):
    """Observer: a run finished and ``results`` (a dict) was written."""
