"""The terminal report of a run: dPQ, win rates and counts, and judge health."""

from __future__ import annotations

from typing import Any


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(ci: list[float] | None, digits: int = 3) -> str:
    return "" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def render_results(results: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    metrics = results["metrics"]
    title = (
        f"{results['task']['name']} · {results['split']} personas ({results['persona_source']['name']}) · "
        f"{results['model']} ({results['strategies']['test']}) vs {results['baseline']} ({results['strategies']['baseline']})"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("criterion")
    table.add_column("win rate", justify="right")
    table.add_column("95% CI", justify="right")
    for column in ("wins", "ties", "losses", "unscored"):
        table.add_column(column, justify="right")
    for name, row in metrics["criteria"].items():
        table.add_row(
            name, _fmt(row["win_rate"]), _interval(row["win_rate_ci95"]),
            str(row["test_wins"]), str(row["ties"]), str(row["baseline_wins"]), str(row["unscored"]),
        )
    console.print(table)
    dpq = metrics["dpq"]
    dpq_text = "undefined (no decided comparisons)" if dpq is None else f"{dpq:+.1f}"
    console.print(f"[bold]dPQ = {dpq_text}[/bold] {_interval(metrics['dpq_ci95'], 1)}  over {metrics['items']} items, judge: {', '.join(results['judges'])} on {results['judge_model']}")
    health = metrics["judge_health"]
    console.print(
        f"judge health: tie rate {_fmt(health.get('tie_rate'), 2)}, position-A wins {_fmt(health.get('position_a_win_share'), 2)}, "
        f"mean words test/baseline {_fmt(health.get('mean_words_test'), 0)}/{_fmt(health.get('mean_words_baseline'), 0)}, "
        f"length-win correlation {_fmt(health.get('length_win_correlation'), 2)}"
    )
    console.print(f"run directory: {results['run_dir']}")
