"""Registers the persona-inference commands (`infer`, `pi-accuracy`, `analyze`).

They live with persona inference itself (`persona_eval.persona_inference.commands`); this
plugin only adds them to the CLI, importing that module when the CLI is built (click only).
"""

from __future__ import annotations

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    from persona_eval.persona_inference.commands import add_commands

    add_commands(cli)
