"""The `persona-eval cache` commands: `cache info` and `cache clear [--stage S]`.

They act on the result cache (``results.sqlite`` under the cache folder, which
PERSONA_EVAL_CACHE overrides): generations, judgments and the other cached stages.
Converted models under ``models/`` are left alone; `cache info` only reports their size.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from persona_eval.contracts.hookspecs import hookimpl


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    total = 0
    for child in path.rglob("*"):
        try:
            if child.is_file():
                total += child.stat().st_size
        except OSError:  # a file vanished or a link is dangling: it holds nothing
            pass
    return total


def _db_size(db: Path) -> int:
    return sum(_size(db.with_name(db.name + suffix)) for suffix in ("", "-wal", "-shm"))


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def cache_info() -> dict:
    from persona_eval.storage.cache import ResultCache
    from persona_eval.storage.files import cache_dir

    folder = cache_dir()
    cache = ResultCache()
    try:
        stages = cache.stats()
    finally:
        cache.close()
    return {
        "cache_dir": str(folder),
        "results_db": str(cache.path),
        "entries": dict(sorted(stages.items())),
        "total_entries": sum(stages.values()),
        "results_db_bytes": _db_size(cache.path),
        "models_bytes": _size(folder / "models"),
    }


def _vacuum(db: Path) -> None:
    """Give the deleted rows' space back to the file system; skipped when another run holds the file."""
    try:
        connection = sqlite3.connect(str(db), timeout=2)
        try:
            connection.execute("VACUUM")
        finally:
            connection.close()
    except sqlite3.OperationalError:
        pass


@hookimpl
def register_commands(cli):
    import click

    @cli.group(name="cache")
    def cache_group():
        """Inspect or clear the result cache (generations, judgments, ...)."""

    @cache_group.command(name="info")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def info_command(as_json):
        """Where the cache lives, how many entries each stage holds, and its size."""
        info = cache_info()
        if as_json:
            import json

            click.echo(json.dumps(info, indent=2))
            return
        click.echo(f"cache folder:  {info['cache_dir']}")
        click.echo(f"result cache:  {info['results_db']} ({_human(info['results_db_bytes'])})")
        if info["entries"]:
            width = max(len(stage) for stage in info["entries"])
            for stage, count in info["entries"].items():
                click.echo(f"  {stage:<{width}}  {count} entries")
        else:
            click.echo("  (empty)")
        click.echo(f"models:        {_human(info['models_bytes'])} (not touched by `cache clear`)")

    @cache_group.command(name="clear")
    @click.option("--stage", default=None, metavar="STAGE",
                  help="Only this stage's entries, e.g. generate or judge (default: all).")
    def clear_command(stage):
        """Delete cached results (all, or one stage's); the next run recomputes them."""
        from persona_eval.errors import UsageError
        from persona_eval.storage.cache import ResultCache

        cache = ResultCache()
        try:
            known = cache.stats()
            if stage is not None and stage not in known and stage not in ("generate", "judge"):
                listing = ", ".join(sorted(set(known) | {"generate", "judge"}))
                raise UsageError(f"cache clear --stage: unknown stage {stage!r}; stages: {listing}")
            removed = cache.clear(stage)
        finally:
            cache.close()
        _vacuum(cache.path)
        what = f"{stage!r} entries" if stage else "entries"
        click.echo(f"removed {removed} cached {what} from {cache.path}")
