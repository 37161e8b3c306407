"""The `persona-eval` command line (click + rich).

Only click and the standard library are imported at start-up; every command imports
what it needs when it runs, so `persona-eval --help` stays fast and never loads torch.
Plugins add commands through the `register_commands` hook.
"""

from __future__ import annotations

import errno
import logging
import sys

import click

from persona_eval.cli_options import bounded, executor_option, persona_options, persona_source_choice, price_option
from persona_eval.versions import __version__


def _setup_logging(verbose: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    from persona_eval.display.quiet import set_quiet

    # Each invocation starts loud: the --quiet of an earlier one in the same process (tests, CliRunner) must not linger.
    set_quiet(False)
    # Logs go to stderr: stdout carries results (`run --json | jq ...`).
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_time=False, show_path=False, markup=False)],
    )
    for noisy in ("httpx", "transformers", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class PersonaEvalGroup(click.Group):
    """Turns our errors into one line on stderr and the right exit code."""

    def invoke(self, ctx):
        from persona_eval.errors import PersonaEvalError

        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # click's own usage errors (a bad option value, a missing argument) as one line too.
            from persona_eval.errors import short_line

            click.echo(f"Error: {short_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except PersonaEvalError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            # A full disk or a vanished folder while running: one line naming the file.
            logging.getLogger("persona_eval").debug("OS error", exc_info=True)
            from persona_eval.errors import short_line

            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"Error: {short_line(f'{where}{exc.strerror or exc}')}", err=True)
            # A name too long for the file system is one the user typed: input, not a failure.
            sys.exit(2 if exc.errno == errno.ENAMETOOLONG else 1)
        except KeyboardInterrupt:
            click.echo("Interrupted. Finished work is saved; rerun the same command to resume.", err=True)
            sys.exit(130)


@click.group(cls=PersonaEvalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="persona-eval")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def cli(verbose: bool) -> None:
    """Measure whether a language model tailors its answers to the person asking.

    Start with `persona-eval run`: the demo task on the embedded model, offline.
    """
    _setup_logging(verbose)


@cli.command()
@click.option("--task", "task", default=None, help="Task name or YAML path (default: demo).")
@click.option("--split", type=click.Choice(["chosen", "rejected"]), default="rejected", show_default=True,
              help="Which persona conditions the answers; 'rejected' is the hard benchmark.")
@click.option("--model", default=None, help="Test model spec, e.g. hf:embedded or hf:PATH,adapter=DIR.")
@click.option("--strategy", default=None, help="How the test model sees the persona (baseline, inline, pt, pt_fs).")
@click.option("--baseline", default=None, help="Baseline model spec (default: the test model).")
@click.option("--baseline-strategy", default=None, help="How the baseline sees the persona (default: baseline).")
@click.option("--judge", "judges", multiple=True,
              help="Judge name (prometheus, gpt-4o, ...) or NAME@MODEL_SPEC; repeat for a majority vote of several judges.")
@click.option("--judge-model", default=None, help="Model the judge runs on, e.g. hf:embedded.")
@click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE",
              help="Judge option over the task's judge.options, e.g. feedback=true; repeatable.")
@click.option("--persona-source", default=None, help="gold, retrieved, user, ... (default: the task's).")
@persona_options
@click.option("--pi-model", default=None, metavar="SPEC",
              help="PI model that infers each test persona from its pair, e.g. hf:embedded; implies the inferred persona source.")
@click.option("--limit", type=bounded("limit"), default=None, help="Evaluate only the first N items (0 = all).")
@click.option("--seed", type=bounded("seed"), default=0, show_default=True)
@click.option("--output-dir", type=click.Path(file_okay=False), default=None, help="Run directory (default: runs/<derived>).")
@click.option("--include-path", "include_paths", multiple=True, type=click.Path(), help="Extra folder of task YAML files.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Local copy of the task's hub dataset (default: $PERSONA_EVAL_DATA_DIR, else the hub).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the result cache.")
@click.option("--bootstrap", type=bounded("bootstrap"), default=1000, show_default=True, help="Bootstrap resamples for intervals.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json (with --dry-run: the plan) to stdout instead of the table.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@executor_option
@click.option("--dry-run", is_flag=True,
              help="Print the plan (calls per stage, cached, estimated tokens and cost) and exit: nothing runs or is written.")
@price_option
def run(task, split, model, strategy, baseline, baseline_strategy, judges, judge_model, judge_options, persona_source, retriever,
        persona_file, persona, on_missing, pi_model, limit, seed, output_dir, include_paths, data_dir, no_cache, bootstrap, as_json,
        quiet, executor, dry_run, prices):
    """Generate with a test model and a baseline, judge both orders, report dPQ."""
    from persona_eval.api import evaluate
    from persona_eval.contracts.model_spec import parse_options
    from persona_eval.display.quiet import quiet_library_progress
    from persona_eval.display.report import emit_results

    if quiet:
        quiet_library_progress()
    persona_source, source_options = persona_source_choice(persona_source, retriever, persona_file, persona, on_missing)
    if pi_model is not None:
        from persona_eval.errors import UsageError

        if persona_source not in (None, "inferred"):
            raise UsageError(f"--pi-model applies to --persona-source inferred, not {persona_source!r}")
        persona_source, source_options = "inferred", {**source_options, "model": pi_model}
    results = evaluate(
        task=task, split=split, model=model, baseline=baseline, strategy=strategy, baseline_strategy=baseline_strategy,
        judge=judges, judge_model=judge_model, judge_options=parse_options(judge_options, option="--judge-option"),
        persona_source=persona_source, persona_source_options=source_options, limit=limit, seed=seed,
        output_dir=output_dir, include_paths=include_paths, data_dir=data_dir, use_cache=not no_cache,
        bootstrap=bootstrap, progress=not quiet and not dry_run, executor=executor, prices=prices, dry_run=dry_run,
    )
    if dry_run:
        from persona_eval.pipeline.plan import emit_plan

        emit_plan(results, as_json)
        return
    emit_results(results, as_json)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--data/--no-data", default=True, show_default=True, help="Also load and check the task's local data.")
def validate(paths, data):
    """Check task YAML files (and their data); errors name file, line and field."""
    from persona_eval.errors import PersonaEvalError
    from persona_eval.taskfile.loading import load_task

    failed = 0
    for path in paths:
        try:
            task = load_task(path)
            if data:
                for partition in ("test", "train", "fewshot"):
                    if task.has_partition(partition) and (task.spec.dataset.hub is None or task.data_path(partition)):
                        task.load(partition)
            click.echo(f"ok: {path} (task {task.name!r}, version {task.spec.version}, hash {task.task_hash})")
        except PersonaEvalError as exc:
            failed += 1
            click.echo(f"Error: {exc}", err=True)
    if failed:
        sys.exit(2)


@cli.command(name="ls")
@click.argument("what", type=click.Choice(["tasks", "generators", "judges", "persona-sources", "retrievers"]), default="tasks")
@click.option("--include-path", "include_paths", multiple=True, type=click.Path())
def ls_command(what, include_paths):
    """List tasks or registered plugin names."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if what == "tasks":
        from persona_eval.taskfile.loading import discover_tasks

        table = Table("task", "file")
        for name, path in sorted(discover_tasks(list(include_paths)).items()):
            table.add_row(name, str(path))
        console.print(table)
        return
    from persona_eval.contracts import registry

    reg = {"generators": registry.generators, "judges": registry.judges,
           "persona-sources": registry.persona_sources, "retrievers": registry.retrievers}[what]
    table = Table("name", "aliases", "plugin", "description")
    for entry in reg.entries():
        table.add_row(entry.name, ", ".join(entry.aliases), entry.plugin, entry.description)
    console.print(table)


@cli.command()
def plugins():
    """List loaded plugins, their versions and what each registered."""
    from rich.console import Console
    from rich.table import Table

    from persona_eval.contracts import registry
    from persona_eval.contracts.plugin_manager import plugin_infos

    for reg in registry.ALL:
        reg.names()  # fill the registries so each plugin's registrations are known
    registry.task_paths()
    table = Table("plugin", "distribution", "version", "module", "registered")
    for info in plugin_infos().values():
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in sorted(info.registered.items()))
        if info.error:
            registered = f"[red]failed: {info.error}[/red]"
        table.add_row(info.name + (" (built-in)" if info.builtin else ""), info.distribution or "", info.version or "", info.module, registered)
    Console().print(table)


def _add_plugin_commands() -> None:
    from persona_eval.contracts.plugin_manager import call_each, record_registration

    known = set(cli.commands)

    def after(plugin: str) -> None:
        for name in sorted(set(cli.commands) - known):
            record_registration(plugin, "command", name)
            known.add(name)

    call_each("register_commands", cli=cli, after=after)


def main(argv=None) -> None:
    from persona_eval.errors import PersonaEvalError

    try:
        _add_plugin_commands()
    except PersonaEvalError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    cli.main(args=argv, prog_name="persona-eval")


if __name__ == "__main__":
    main()
