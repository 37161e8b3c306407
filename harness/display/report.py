"""The terminal report of a run: per criterion counts and win rates with intervals, dPQ, judge health, usage.

Beside the paper's win rates and dPQ the table shows the probability-weighted win rate of
each criterion (from the judge's P(A); ``n/a (no P(A))`` where none was recorded) and a
weighted dPQ row. The bold line leads with the metric the task chose (``headline`` in the
metrics: ``dpq`` or ``weighted_dpq``) and the next line gives the other one; an undefined
paper dPQ is explained from the counts (all ties, all unscored, ...).

With several judges the table shows the majority vote first, then each judge's own
criteria rows and dPQ, so a disagreement between judges is visible at a glance. One line
sums the ``usage`` block (calls, cached, tokens per stage; cost only where a price was given).
"""

from __future__ import annotations

from typing import Any

NO_PROB = "n/a (no P(A))"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


def _interval(ci: list[float] | None, digits: int = 3) -> str:
    return "" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _signed(value: float, ci: list[float] | None) -> str:
    text = f"{value:+.1f}"
    return f"{text} [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else text


def _tie_cause(metrics: dict[str, Any]) -> str:
    """Why pairs came out tied, as far as the judge-health counts can tell."""
    share = (metrics.get("judge_health") or {}).get("position_a_win_share")
    if metrics.get("voting"):
        if share == 1.0:
            return "every judge preferred position A in both orders"
        if share == 0.0:
            return "every judge preferred position B in both orders"
        return "the judges had no majority, or picked the same position in both orders"
    if share == 1.0:
        return "the judge preferred position A in both orders"
    if share == 0.0:
        return "the judge preferred position B in both orders"
    return "the judge picked the same position in both orders"


def undefined_reason(metrics: dict[str, Any]) -> str:
    """Why the paper's dPQ is undefined, derived from the per-criterion counts."""
    rows = metrics.get("criteria") or {}
    undecided = {name: row for name, row in rows.items() if row.get("win_rate") is None}
    if not metrics.get("items"):
        return "no items were judged"
    if not undecided:
        return "a criterion has no win rate"
    names = " and ".join(undecided)
    scope = "every comparison" if len(undecided) == len(rows) else f"every {names} comparison"
    ties = sum(row.get("ties", 0) for row in undecided.values())
    unscored = sum(row.get("unscored", 0) for row in undecided.values())
    if ties and not unscored:
        return f"{scope} was a tie ({_tie_cause(metrics)})"
    if unscored and not ties:
        reasons = (metrics.get("judge_health") or {}).get("unscored_reasons") or {}
        top = next(iter(reasons), None)
        return f"{scope} was unscored" + (f" (mostly: {top})" if top else "")
    return f"no {names} comparison was decided ({ties} ties, {unscored} unscored)"


def _dpq(metrics: dict[str, Any]) -> str:
    dpq = metrics.get("dpq")
    if dpq is None:
        return f"undefined: {undefined_reason(metrics)}"
    return _signed(dpq, metrics.get("dpq_ci95"))


def _weighted_dpq(metrics: dict[str, Any]) -> str:
    weighted = metrics.get("weighted") or {}
    if weighted.get("dpq") is None:
        return NO_PROB
    return _signed(weighted["dpq"], weighted.get("dpq_ci95"))


def _weighted_rate(weighted: dict[str, Any] | None, criterion: str) -> str:
    row = ((weighted or {}).get("criteria") or {}).get(criterion)
    if not row or row.get("win_rate") is None:
        return NO_PROB
    text = f"{row['win_rate']:.3f}"
    if row.get("win_rate_ci95"):
        # Three digits: weighted rates sit close together (near 0.5 for a position-biased judge).
        text += " " + _interval(row["win_rate_ci95"], 3)
    if row.get("items_without_prob_a"):
        text += f" ({row['items']} items)"  # the others had no P(A) in either order
    return text


def _lead_lines(metrics: dict[str, Any]) -> tuple[str, str | None]:
    """(the headline metric, the other one) as the report's two summary lines."""
    has_weighted = "weighted" in metrics
    if metrics.get("headline") == "weighted_dpq" and has_weighted:
        paper = metrics.get("dpq")
        other = (f"paper dPQ undefined: {undefined_reason(metrics)}" if paper is None
                 else f"paper dPQ = {_signed(paper, metrics.get('dpq_ci95'))}")
        return f"weighted dPQ = {_weighted_dpq(metrics)}", other
    other = None
    if has_weighted:
        weighted = _weighted_dpq(metrics)
        other = (f"weighted dPQ {weighted}" if weighted == NO_PROB
                 else f"weighted dPQ = {weighted} (probability-weighted, from the judge's P(A))")
    return f"dPQ = {_dpq(metrics)}", other


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


def format_tokens(count: int | float | None) -> str:
    """A token count in a few characters: 950, 5.1k, 12k, 3.4M."""
    if count is None:
        return "?"
    count = float(count)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            value = count / limit
            return f"{value:.1f}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return f"{count:.0f}"


def format_cost(dollars: float) -> str:
    """Dollars to the cent; a fraction of a cent to four places, or "< $0.0001"."""
    if dollars >= 0.01 or dollars == 0:
        return f"${dollars:,.2f}"
    return f"${dollars:.4f}" if dollars >= 0.0001 else "< $0.0001"


def usage_line(usage: dict[str, Any] | None) -> str | None:
    """The report's one line of the ``usage`` block: calls, cached, tokens per stage, and cost where priced."""
    if not usage:
        return None
    parts = []
    for stage, rows in usage.items():
        if stage in ("total", "prices") or not isinstance(rows, dict):
            continue
        rows = [row for row in rows.values() if isinstance(row, dict)]
        calls, cached, resumed = (sum(int(row.get(key) or 0) for row in rows) for key in ("requests", "cached", "resumed"))
        tokens_in, tokens_out = (sum(int(row.get(key) or 0) for row in rows) for key in ("input_tokens", "output_tokens"))
        held = f"{cached} cached" + (f", {resumed} resumed" if resumed else "")
        estimated = any(row.get("source") == "estimated" for row in rows if row.get("requests"))
        parts.append(f"{stage} {calls} calls ({held}) {format_tokens(tokens_in)} in / {format_tokens(tokens_out)} out tokens"
                     + (" (estimated)" if estimated else ""))
    total = usage.get("total") or {}
    if "cost" in total:
        unpriced = total.get("unpriced") or []
        parts.append(f"cost {format_cost(total['cost'])}" + (f" (no price for {', '.join(unpriced)})" if unpriced else ""))
    return "usage: " + " · ".join(parts) if parts else None


def render_results(results: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

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
    # Results written before the weighted preference existed have no such block: no column.
    weighted_column = any("weighted" in block for block in (metrics, *per_judge.values()))
    if weighted_column:
        table.add_column("weighted [95% CI]", justify="right")

    def add_rows(label: str | None, block: dict[str, Any]) -> None:
        rows = []
        weighted = block.get("weighted")
        for name, row in block["criteria"].items():
            rate = _fmt(row["win_rate"])
            if row.get("win_rate_ci95"):
                rate += " " + _interval(row["win_rate_ci95"], 2)
            rows.append([name, str(row["test_wins"]), str(row["baseline_wins"]), str(row["ties"]), str(row["unscored"]), rate,
                         _weighted_rate(weighted, name)])
        dpq = "undefined" if block["dpq"] is None else f"{block['dpq']:+.1f}"
        if block.get("dpq_ci95"):
            dpq += " " + _interval(block["dpq_ci95"], 1)
        rows.append(["dPQ", "", "", "", "", dpq, ""])
        if weighted_column:
            rows.append(["weighted dPQ", "", "", "", "", "", _weighted_dpq(block)])
        for index, cells in enumerate(rows):
            if not weighted_column:
                cells.pop()
            if several:
                cells.insert(0, (label or "") if index == 0 else "")
            table.add_row(*cells, end_section=index == len(rows) - 1)

    add_rows("majority" if several else None, metrics)
    if several:
        for label, block in per_judge.items():
            add_rows(label, block)
    console.print(table)
    judges = ", ".join(results["judges"])
    lead, other = _lead_lines(metrics)
    # Text, not markup: intervals and model names are printed exactly as they are.
    console.print(Text.assemble(
        (lead, "bold"),
        f"  over {metrics['items']} items, judge{'s (majority vote)' if several else ''}: {judges} on {results['judge_model']}",
    ))
    if other:
        console.print(Text(other))
    if several and metrics.get("voting"):
        voting = metrics["voting"]
        console.print(
            f"judges unanimous on {voting.get('unanimous', 0)} of {voting.get('comparisons', 0)} comparisons; "
            "no majority counts as a tie, all unscored as unscored"
        )
    console.print("judge health: " + _health(metrics["judge_health"]))
    for line in _api(results.get("api", {})):
        console.print(line)
    usage = usage_line(results.get("usage"))
    if usage:
        console.print(Text(usage))
    console.print(f"run directory: {results['run_dir']}")


def emit_results(results: dict[str, Any], as_json: bool = False) -> None:
    """Print a run's results: the JSON document, or the table."""
    if as_json:
        import json

        import click

        click.echo(json.dumps(results, indent=2, default=str))
    else:
        render_results(results)
