"""Command-line options that several commands share: how a persona source is chosen, numeric bounds.

`persona-eval run` and `persona-eval personas` take the same persona flags; the flags and
the rule that turns them into a persona source name and options live here, below both.
`bounded(NAME)` is the click type of every numeric option: the range comes from
`persona_eval.limits.NUMERIC`, the table the Python API checks too, so a value out of range
is a one-line usage error (exit 2) before any work, on every command.
"""

from __future__ import annotations

import click

from persona_eval.limits import bounded

__all__ = ["bounded", "executor_option", "persona_options", "persona_source_choice"]


def executor_option(command):
    """``--executor local|ray[,KEY=VALUE...]``, shared by `run` and `judge` (parsed by `persona_eval.executors`)."""
    from persona_eval.executors import EXECUTOR_HELP

    return click.option("--executor", default="local", show_default=True, metavar="local|ray[,KEY=VALUE...]",
                        help=EXECUTOR_HELP)(command)


def price_option(command):
    """``--price MODEL=IN_PER_1M:OUT_PER_1M`` (repeatable), shared by `run` and `judge` (read by `scoring.usage`)."""
    return click.option("--price", "prices", multiple=True, metavar="MODEL=IN_PER_1M:OUT_PER_1M",
                        help="Dollars per million input:output tokens of a model spec, e.g. openai:gpt-4o=2.5:10; repeatable "
                             "(also: a prices: YAML file in $PERSONA_EVAL_PRICES). Without one, no cost is shown.")(command)


def persona_options(command):
    """The options that configure a persona source, shared by `run` and `personas`."""
    for decorator in reversed((
        click.option("--retriever", default=None, metavar="NAME[,key=value...]",
                     help="Retriever for retrieved personas: dense (default), bm25, colbert; implies the retrieved persona source."),
        click.option("--persona-file", type=click.Path(dir_okay=False), default=None,
                     help="JSONL/CSV/YAML file of user-written personas by item id or prompt; implies the user persona source."),
        click.option("--persona", default=None, help='One user-written persona for every item; implies the user persona source.'),
        click.option("--on-missing", type=click.Choice(["error", "skip"]), default=None,
                     help="User personas: an item without one is an error (default) or is left out."),
    )):
        command = decorator(command)
    return command


def persona_source_choice(source, retriever, persona_file, persona, on_missing):
    """The persona source name and its options from the command-line flags (None: the task's source)."""
    from persona_eval.errors import UsageError

    options: dict = {}
    user_flags = [flag for flag, value in (("--persona-file", persona_file), ("--persona", persona), ("--on-missing", on_missing)) if value is not None]
    if retriever is not None:
        if user_flags:
            raise UsageError(f"--retriever is for retrieved personas; {user_flags[0]} is for user-written ones: use one kind")
        if source not in (None, "retrieved", "retrieval"):
            raise UsageError(f"--retriever applies to --persona-source retrieved, not {source!r}")
        return "retrieved", {"retriever": retriever}
    if user_flags:
        if source not in (None, "user", "user-written"):
            raise UsageError(f"{user_flags[0]} applies to --persona-source user, not {source!r}")
        if persona_file is None and persona is None:
            raise UsageError('--on-missing needs --persona-file PATH (or --persona "The user is ...")')
        if persona_file is not None:
            options["persona_file"] = persona_file
        if persona is not None:
            options["persona"] = persona
        if on_missing is not None:
            options["on_missing"] = on_missing
        return "user", options
    return source, options
