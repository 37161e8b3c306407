"""Registers `persona-eval train sft|dpo`, defined with the trainers (`persona_eval.trainers.commands`).

Only click loads here; TRL, PEFT and torch load when a training command runs.
"""

from __future__ import annotations

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    from persona_eval.trainers.commands import train_group

    cli.add_command(train_group)
