"""The `persona-eval personas` command: show the personas a run would use, with provenance.

It resolves the task and persona source exactly as `run` does (same flags, same
defaults) and prints a table or writes JSON Lines, so retrieved or user-written
personas can be checked before any generation or judge call is spent on them.
"""

from __future__ import annotations

import json
from typing import Any

import click

from persona_eval.contracts.hookspecs import hookimpl


def _summary(provenance: dict[str, Any]) -> str:
    """One line of rich markup (user text escaped) saying where a persona came from."""
    from rich.markup import escape

    if "train_id" in provenance:
        skipped = f", skipped {len(provenance['skipped'])}" if provenance.get("skipped") else ""
        return escape(f"{provenance['train_id']} (rank {provenance['rank']}, score {provenance['score']:.3f}{skipped})")
    if "skipped" in provenance:
        return f"[yellow]{escape(str(provenance['skipped']))}[/yellow]"
    if "where" in provenance:
        return escape(f"{provenance['where']} (by {provenance.get('matched_by')})")
    return escape(", ".join(f"{k}={v}" for k, v in provenance.items() if not isinstance(v, (dict, list))))


#: The most of a persona the table shows (the whole text goes to -o). rich wraps a cell by
#: re-partitioning the rest of its text at every line, quadratic in its length: a 10 MB
#: persona took minutes to print. Bounding what the table holds keeps printing linear.
TABLE_PERSONA_CHARS = 600


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def personas_records(task_name, split, source_name, source_options, limit, include_paths) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One record per test item (item, prompt, persona, provenance), and the source's identity."""
    from persona_eval.contracts.factories import build_persona_source
    from persona_eval.errors import UsageError
    from persona_eval.pipeline.personas import check_persona_lengths, test_examples
    from persona_eval.taskfile.loading import resolve_task

    task = resolve_task(task_name, list(include_paths))
    if split not in task.spec.splits:
        raise UsageError(f"task {task.name!r} has no split {split!r}; it has: {', '.join(task.spec.splits)}")
    examples = test_examples(task, limit)  # the first `limit` items (0 or None: all), prompts checked
    name = source_name or task.spec.persona_source
    source = build_persona_source(name, task, **source_options)
    personas = source.personas(examples, split)
    # Personas over `limits.TEXT` are refused, as a run would refuse them, before anything is printed.
    check_persona_lengths(name, examples, personas)
    records = []
    for example, persona in zip(examples, personas):
        records.append({
            "item_id": example.id,
            "split": split,
            "prompt": example.prompt,
            "persona": persona.text,
            "persona_source": persona.source,
            "persona_provenance": persona.provenance,
            "gold_persona": example.persona_for(split) or None,
        })
    return records, {"name": name, "options": source_options, "identity": source.identity(), "task": task.name}


@hookimpl
def register_commands(cli):
    from persona_eval.cli_options import bounded, persona_options, persona_source_choice

    @cli.command(name="personas")
    @click.option("--task", "task", default=None, help="Task name or YAML path (default: demo).")
    @click.option("--split", type=click.Choice(["chosen", "rejected"]), default="rejected", show_default=True,
                  help="Which side's personas: chosen or rejected.")
    @click.option("--source", "source", default=None, help="Persona source: gold, retrieved, user, ... (default: the task's).")
    @persona_options
    @click.option("--limit", type=bounded("limit"), default=None, help="Only the first N test items (0 or unset = all).")
    @click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write JSON Lines here (one item a line).")
    @click.option("--include-path", "include_paths", multiple=True, type=click.Path(), help="Extra folder of task YAML files.")
    @click.option("--quiet", is_flag=True, help="With -o: do not print the table.")
    def personas(task, split, source, retriever, persona_file, persona, on_missing, limit, output, include_paths, quiet):
        """Show the personas a run would condition on, with provenance (no model calls)."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from persona_eval.storage.files import atomic_write_text

        name, options = persona_source_choice(source, retriever, persona_file, persona, on_missing)
        records, described = personas_records(task, split, name, options, limit, include_paths)
        console = Console()
        if output:
            atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
        if not (output and quiet):
            identity = described["identity"]
            title = f"{described['task']} · {split} · source {described['name']}"
            if isinstance(identity.get("retriever"), dict):
                title += f" · retriever {identity['retriever'].get('name')} (k={identity.get('k')})"
            table = Table("item", "prompt", "persona", "provenance", title=title, show_lines=False)
            for record in records:
                table.add_row(
                    escape(record["item_id"]), escape(_shorten(record["prompt"], 60)),
                    escape(_shorten(record["persona"], TABLE_PERSONA_CHARS)) if record["persona"] is not None
                    else "[yellow](none)[/yellow]",
                    _summary(record["persona_provenance"]),
                )
            console.print(table)
        skipped = sum(1 for r in records if r["persona"] is None)
        note = f"{len(records)} item(s)" + (f", {skipped} without a persona (left out of a run)" if skipped else "")
        if output:
            note += f"; wrote {output}"
        Console(stderr=True).print(note)
