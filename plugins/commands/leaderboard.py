"""The `persona-eval leaderboard` commands: build, show, render, publish.

    persona-eval leaderboard build RESULTS... -o FILE [--allow-mixed] [--sort dpq|weighted_dpq]
    persona-eval leaderboard show FILE
    persona-eval leaderboard render FILE -o DIR
    persona-eval leaderboard publish FILE (--repo ID | --to DIR)

RESULTS are results.json files, run directories, or folders of run directories. The
work lives in ``persona_eval.leaderboards``; this module only wires it to click.
"""

from __future__ import annotations

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    import click

    from persona_eval.cli_options import bounded

    @cli.group(name="leaderboard")
    def leaderboard():
        """Build, show, render and publish leaderboards of comparable runs."""

    @leaderboard.command(name="build")
    @click.argument("results", nargs=-1, required=True, type=click.Path())
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Leaderboard JSON to write.")
    @click.option("--allow-mixed", is_flag=True,
                  help="Accept results that are not comparable, in separate tables (one per task/judge/baseline/persona source).")
    @click.option("--examples", type=bounded("examples"), default=2, show_default=True,
                  help="Example personas per split to show on the page (read from each run's generations.jsonl).")
    @click.option("--title", default=None, help="Title of the leaderboard page.")
    # The choices are spelled out here (not imported) so `--help` stays light.
    @click.option("--sort", "sort_by", type=click.Choice(["dpq", "weighted_dpq"]), default="dpq", show_default=True,
                  help="Metric the rows are sorted by: the paper's dPQ or the probability-weighted dPQ (from the judge's P(A)).")
    def build(results, output, allow_mixed, examples, title, sort_by):
        """Build a schema-checked leaderboard from results files or run directories."""
        from pathlib import Path

        from persona_eval.leaderboards.build import build_leaderboard, write_leaderboard

        doc = build_leaderboard(results, allow_mixed=allow_mixed, base=Path(output).parent, examples=examples, title=title,
                                sort_by=sort_by)
        write_leaderboard(doc, output)
        rows = sum(len(g["rows"]) for g in doc["groups"])
        click.echo(f"wrote {output}: {len(doc['groups'])} table(s), {rows} row(s), sorted by {sort_by}")

    @leaderboard.command(name="show")
    @click.argument("file", type=click.Path())
    def show(file):
        """Print the leaderboard as a table, sorted by the rejected-split metric it was built with (dPQ by default)."""
        from persona_eval.leaderboards import load_leaderboard
        from persona_eval.leaderboards.render import show_leaderboard

        show_leaderboard(load_leaderboard(file))

    @leaderboard.command(name="render")
    @click.argument("file", type=click.Path())
    @click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for index.html.")
    def render(file, out_dir):
        """Render one static HTML page (no network fetches) into a folder."""
        from pathlib import Path

        from persona_eval.leaderboards import load_leaderboard
        from persona_eval.leaderboards.render import write_page

        page = write_page(load_leaderboard(file), out_dir, source_dir=Path(file).parent)
        click.echo(f"wrote {page}")

    @leaderboard.command(name="publish")
    @click.argument("file", type=click.Path())
    @click.option("--repo", default=None, help="Hugging Face dataset repo id (token from HF_TOKEN).")
    @click.option("--to", "to_dir", default=None, type=click.Path(file_okay=False), help="Local folder instead of the Hub.")
    @click.option("--path-in-repo", default=None, help="File name in the repo (default: the file's name).")
    @click.option("--revision", default=None, help="Branch of the repo to commit to.")
    @click.option("--create", is_flag=True, help="Create the dataset repo if it does not exist.")
    def publish(file, repo, to_dir, path_in_repo, revision, create):
        """Publish the leaderboard JSON and its page to a Hub dataset repo or a folder."""
        from persona_eval.errors import UsageError
        from persona_eval.leaderboards.publish import publish_to_dir, publish_to_hub

        if (repo is None) == (to_dir is None):
            raise UsageError("give exactly one of --repo ID or --to DIR")
        if to_dir is not None:
            for path in publish_to_dir(file, to_dir):
                click.echo(f"wrote {path}")
            return
        for url in publish_to_hub(file, repo, path_in_repo=path_in_repo, revision=revision, create=create):
            click.echo(f"uploaded: {url}")
