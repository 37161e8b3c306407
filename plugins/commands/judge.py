"""The `persona-eval judge RUN_DIR` command: re-judge a finished run's generations.

Nothing is regenerated. The judgments, config and results go to
``RUN_DIR/judge-<judges>-<model>-<hash>/`` (see `persona_eval.pipeline.run.rejudge`), so the run's
own ``results.json`` stays as it was and each judge set keeps its own folder.
"""

from __future__ import annotations

import click

from persona_eval.cli_options import bounded, executor_option, price_option
from persona_eval.contracts.hookspecs import hookimpl


@click.command(name="judge")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--judge", "judges", multiple=True,
              help="Judge name, or NAME@MODEL_SPEC for its own model; repeat for a majority vote (default: the run's).")
@click.option("--judge-model", default=None, help="Model the judges run on (default: the run's), e.g. openai:gpt-4o.")
@click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE",
              help="Judge option over the task's judge.options, e.g. feedback=true (default: the run's); repeatable.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Where to write (default: RUN_DIR/judge-<judges>-<model>-<hash>).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the result cache.")
@click.option("--bootstrap", type=bounded("bootstrap"), default=1000, show_default=True, help="Bootstrap resamples for intervals.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json (with --dry-run: the plan) to stdout instead of the table.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@executor_option
@click.option("--dry-run", is_flag=True,
              help="Print the plan (judge calls, cached, estimated tokens and cost) and exit: nothing is judged or written.")
@price_option
def judge_command(run_dir, judges, judge_model, judge_options, output_dir, no_cache, bootstrap, as_json, quiet, executor,
                  dry_run, prices):
    """Judge the saved generations of RUN_DIR again (other judges or judge model), without regenerating."""
    from persona_eval.contracts.factories import close_generators
    from persona_eval.contracts.model_spec import parse_options
    from persona_eval.display.quiet import quiet_library_progress
    from persona_eval.display.report import emit_results
    from persona_eval.pipeline.run import rejudge

    if quiet:
        quiet_library_progress()

    options = dict(judges=tuple(judges), judge_model=judge_model, output_dir=output_dir,
                   judge_options=parse_options(judge_options, option="--judge-option") if judge_options else None,
                   use_cache=not no_cache, resamples=bootstrap, prices=prices)
    try:
        if dry_run:
            from persona_eval.pipeline.plan import emit_plan, plan_rejudge

            emit_plan(plan_rejudge(run_dir, **options), as_json)
            return
        results = rejudge(run_dir, **options, progress=not quiet, executor=executor)
    finally:
        close_generators()
    emit_results(results, as_json)


@hookimpl
def register_commands(cli):
    cli.add_command(judge_command)
