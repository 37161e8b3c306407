"""The `persona-eval view RUN_DIR` command: one static HTML page to browse a run item by item.

    persona-eval view runs/demo-rejected-embedded-1a2b3c4d            # writes RUN_DIR/view/index.html
    persona-eval view RUN_DIR -o site/ --open                         # site/index.html, opened in a browser

The command loads the run with `persona_eval.api.load_run` (its ``judge-*`` re-judgings
included), checks the records, computes each item's outcome per judge with
`persona_eval.scoring` (the very functions results.json was scored with) and hands all of it
to `persona_eval.display.run_page`, which builds and writes the page. Bad input is one line
naming the file and line, and nothing is written.
"""

from __future__ import annotations

import click

from persona_eval.contracts.hookspecs import hookimpl


def judge_sets(run):
    """The run's own verdicts, then each re-judging's, as `run_page.JudgeSet`s with their outcomes."""
    from persona_eval.display.run_page import JudgeSet, check_judgments
    from persona_eval.scoring.voting import majority_outcomes

    sets = []
    for folder, records in [("", run), *sorted(run.rejudgings.items())]:
        check_judgments(records.judgments, records.run_dir / "judgments.jsonl")
        outcomes = records.outcomes()
        judge_set = JudgeSet(folder=folder, config=records.config, results=records.results, judgments=records.judgments,
                             outcomes=outcomes)
        labels = [label for label in judge_set.labels() if label]
        if len(labels) > 1:
            # An item a judge has not reached yet is that judge's abstention, as in results.json.
            judge_set.majority = majority_outcomes({label: outcomes.get(label, {}) for label in labels})
        sets.append(judge_set)
    return sets


def build_run_view(run_dir):
    """Load RUN_DIR and build the page's data document (nothing is written)."""
    from pathlib import Path

    from persona_eval.api import load_run
    from persona_eval.display.run_page import build_view, check_generations
    from persona_eval.errors import UsageError

    folder = Path(run_dir)
    if not folder.is_dir():
        raise UsageError("not a run directory (no such folder)", where=str(folder))
    run = load_run(folder)
    generations_file = folder / "generations.jsonl"
    if not generations_file.exists() and "rejudge_of" in run.config:  # a judge-* folder: its parent's generations
        generations_file = folder.parent / "generations.jsonl"
    check_generations(run.generations, generations_file)
    return build_view(run_dir=folder, config=run.config, results=run.results, generations=run.generations,
                      judge_sets=judge_sets(run))


@click.command(name="view")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder to write index.html into (default: RUN_DIR/view).")
@click.option("--open", "open_page", is_flag=True, help="Open the page in a web browser.")
def view_command(run_dir, out_dir, open_page):
    """Write one static HTML page (no network fetches) to browse RUN_DIR item by item.

    Prompt, persona and provenance, both responses side by side, every verdict with P(A) and
    the judge's feedback, filters by outcome, criterion and judge (re-judgings included), search.
    """
    from pathlib import Path

    from persona_eval.display.run_page import write_page

    view = build_run_view(run_dir)
    target = write_page(view, Path(out_dir) if out_dir else Path(run_dir) / "view")
    judges = len(view["choices"])
    click.echo(f"wrote {target}: {len(view['items']['id'])} items, {judges} judge{'s' if judges != 1 else ''}")
    if open_page:
        import webbrowser

        webbrowser.open(target.resolve().as_uri())


@hookimpl
def register_commands(cli):
    cli.add_command(view_command)
