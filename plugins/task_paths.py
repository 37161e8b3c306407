"""Registers the folder of task YAML files shipped inside the package (`persona_eval.tasks`)."""

from __future__ import annotations

from importlib.resources import files

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_task_paths(register):
    register(str(files("persona_eval.tasks")))
