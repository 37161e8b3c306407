"""persona-eval example plugin: the hooks that register its judge, generator and command.

Targets are lazy "module:attr" strings, so listing plugins never imports the judge or
the generator; names are namespaced ``example/...`` as third-party names should be.
"""

from __future__ import annotations

from persona_eval.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_judges(register):
    register(
        "example/length",
        "persona_eval_example.judge:LengthJudge",
        aliases=["example/len"],
        description="prefers the response whose length fits the persona (deterministic, no model)",
    )


@hookimpl
def register_generators(register):
    register(
        "example/echo",
        "persona_eval_example.generator:EchoGenerator",
        description="echoes the persona line (or the prompt) of its input: deterministic, instant",
    )


@hookimpl
def register_commands(cli):
    import click

    @cli.command(name="example-hello")
    @click.option("--name", default="world", show_default=True)
    def example_hello(name):
        """Say hello from the example plugin (shows how plugins add commands)."""
        click.echo(f"hello {name}, from persona-eval-example-plugin {__version__}")
