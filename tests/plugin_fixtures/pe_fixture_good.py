"""A well-behaved fixture plugin: a lazy judge with an alias, an eager generator, a task folder, a command."""

from pathlib import Path

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenResult


class ConstGenerator(Generator):
    """Answers every request with the same text (the spec's model part)."""

    def __init__(self, model, suffix=""):
        self.text = f"{model}{suffix}"

    def identity(self):
        return {"backend": "fixture/const", "text": self.text}

    def generate(self, requests):
        return [GenResult(text=self.text, finish_reason="stop") for _ in requests]


@hookimpl
def register_judges(register):
    # A lazy target: pe_fixture_lazy_target is imported only when this judge is used.
    register("fixture/coin", "pe_fixture_lazy_target:CoinJudge", aliases=["fixture/flip", "flip"])


@hookimpl
def register_generators(register):
    register("fixture/const", ConstGenerator, aliases=["const"])


@hookimpl
def register_task_paths(register):
    register(Path(__file__).resolve().parent / "tasks")


@hookimpl
def register_commands(cli):
    import click

    @cli.command(name="fixture-hello")
    def fixture_hello():
        """A command added by a fixture plugin."""
        click.echo("hello from pe_fixture_good")
