"""The terminal report of a run: per criterion counts and win rates with intervals, dPQ, judge health.

With several judges the table shows the majority vote first, then each judge's own
criteria rows and dPQ, so a disagreement between judges is visible at a glance.
"""

from __future__ import annotations

from typing import Any


def _fmt(value: float | None, digits: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


def _interval(ci: list[float] | None, digits: int = 3) -> str:
    return "" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _dpq(metrics: dict[str, Any]) -> str:
    dpq = metrics.get("dpq")
    if dpq is None:
        return "undefined (no decided comparisons in a criterion)"
    return f"{dpq:+.1f} {_interval(metrics.get('dpq_ci95'), 1)}".rstrip()


def _health(health: dict[str, Any]) -> str:
    text = (
        f"tie rate {_fmt(health.get('tie_rate'), 2)}, position-A wins {_fmt(health.get('position_a_win_share'), 2)}, "
        f"mean words test/baseline {_fmt(health.get('mean_words_test'), 0)}/{_fmt(health.get('mean_words_baseline'), 0)}, "
        f"length-win correlation {_fmt(health.get('length_win_correlation'), 2)}"
    )
    if health.get("unscored_verdicts"):
        reasons = health.get("unscored_reasons") or {}
        top = next(iter(reasons.items()), None)
        text += f", unscored verdicts {health['unscored_verdicts']}" + (f" (mostly: {top[0]})" if top else "")
    return text


def _api(api: dict[str, Any]) -> list[str]:
    lines = []
    for spec, stats in (api or {}).items():
        if not isinstance(stats, dict):
            continue
        parts = [f"{key} {value}" for key, value in stats.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
        if parts:
            lines.append(f"api {spec}: " + ", ".join(parts))
    return lines


def render_results(results: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    metrics = results["metrics"]
    per_judge = results.get("per_judge") or {}
    several = len(per_judge) > 1
    title = (
        f"{results['task']['name']} · {results['split']} personas ({results['persona_source']['name']}) · "
        f"{results['model']} ({results['strategies']['test']}) vs {results['baseline']} ({results['strategies']['baseline']})"
    )
    table = Table(title=title, title_justify="left")
    if several:
        table.add_column("judge", overflow="fold")
    table.add_column("criterion")
    for column in ("wins", "losses", "ties", "unscored"):
        table.add_column(column, justify="right")
    table.add_column("win rate [95% CI]", justify="right")

    def add_rows(label: str | None, block: dict[str, Any]) -> None:
        rows = []
        for name, row in block["criteria"].items():
            rate = _fmt(row["win_rate"])
            if row.get("win_rate_ci95"):
                rate += " " + _interval(row["win_rate_ci95"], 2)
            rows.append([name, str(row["test_wins"]), str(row["baseline_wins"]), str(row["ties"]), str(row["unscored"]), rate])
        dpq = "undefined" if block["dpq"] is None else f"{block['dpq']:+.1f}"
        if block.get("dpq_ci95"):
            dpq += " " + _interval(block["dpq_ci95"], 1)
        rows.append(["dPQ", "", "", "", "", dpq])
        for index, cells in enumerate(rows):
            if several:
                cells.insert(0, (label or "") if index == 0 else "")
            table.add_row(*cells, end_section=index == len(rows) - 1)

    add_rows("majority" if several else None, metrics)
    if several:
        for label, block in per_judge.items():
            add_rows(label, block)
    console.print(table)
    judges = ", ".join(results["judges"])
    console.print(
        f"[bold]dPQ = {_dpq(metrics)}[/bold]  over {metrics['items']} items, "
        f"judge{'s (majority vote)' if several else ''}: {judges} on {results['judge_model']}"
    )
    if several and metrics.get("voting"):
        voting = metrics["voting"]
        console.print(
            f"judges unanimous on {voting.get('unanimous', 0)} of {voting.get('comparisons', 0)} comparisons; "
            "no majority counts as a tie, all unscored as unscored"
        )
    console.print("judge health: " + _health(metrics["judge_health"]))
    for line in _api(results.get("api", {})):
        console.print(line)
    console.print(f"run directory: {results['run_dir']}")


def emit_results(results: dict[str, Any], as_json: bool = False) -> None:
    """Print a run's results: the JSON document, or the table."""
    if as_json:
        import json

        import click

        click.echo(json.dumps(results, indent=2, default=str))
    else:
        render_results(results)
