"""Showing a leaderboard: a rich table in the terminal, or one static HTML page.

The page is self-contained: inline CSS and JavaScript, the chart an inline SVG, and a
Content-Security-Policy that allows only those two inline blocks (by their SHA-256), so
the page can fetch nothing and a string that slipped through unescaped could not run.
Every string from results goes through Jinja2 autoescaping; links are kept only when
they are relative paths or http(s) URLs.

Both show the paper's dPQ and the probability-weighted dPQ with their intervals, rows in
the order of the leaderboard's ``sort_by`` (and say which), and the chart plots that metric.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from persona_eval.errors import UsageError
from persona_eval.storage.files import write_page as write_page_file

from . import HERE, SORT_METRICS, SPLIT_ORDER, sort_by_of
from .build import sort_rows

TEMPLATES = HERE / "templates"
PAGE_NAME = "index.html"
SPLIT_LABELS = {"rejected": "rejected", "chosen": "chosen"}


# -- formatting ----------------------------------------------------------------------------


def fmt_dpq(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}"


def fmt_ci(ci: list[float] | None, percent: bool = False) -> str:
    if not ci:
        return ""
    if percent:
        return f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def counts_text(criterion: dict[str, Any]) -> str:
    return f"{criterion['test_wins']}-{criterion['ties']}-{criterion['baseline_wins']}-{criterion['unscored']}"


def short_identity(identity: Any) -> str:
    """A short stable fingerprint of an identity object, for display next to a name."""
    from persona_eval.hashing import stable_hash

    return stable_hash(identity, 10)


def splits_of(doc_or_group: dict[str, Any]) -> list[str]:
    groups = doc_or_group.get("groups", [doc_or_group])
    seen = {s for g in groups for row in g["rows"] for s in row["splits"]}
    return [s for s in SPLIT_ORDER if s in seen] + sorted(seen - set(SPLIT_ORDER))


# -- terminal ------------------------------------------------------------------------------


def _short_ci(ci: list[float] | None) -> str:
    """A narrow interval for the terminal: whole points, or tenths where both ends are near 0."""
    if not ci:
        return "-"
    digits = 1 if max(abs(ci[0]), abs(ci[1])) < 10 else 0

    def end(value: float) -> str:
        return f"{(value if round(value, digits) else 0.0):+.{digits}f}"  # never "-0"

    return f"[{end(ci[0])},{end(ci[1])}]"


def show_leaderboard(doc: dict[str, Any], console=None) -> None:
    """Rich tables, one per group, rows sorted by the rejected-split value of the leaderboard's ``sort_by``."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    by = sort_by_of(doc)
    if doc.get("title"):
        console.print(Text(doc["title"], style="bold"))
    console.print(Text(f"rows sorted by {SORT_METRICS[by]} (rejected split, then chosen)"))
    for group in doc["groups"]:
        task, judges, baseline, source = group["task"], group["judges"], group["baseline"], group["persona_source"]
        title = (
            f"task {task['name']} v{task['version']} ({task['hash']}) · judge {', '.join(judges['names'])} on {judges['model']} · "
            f"baseline {baseline['model']} ({baseline['strategy']}) · personas {source['name']}"
        )
        # One space between columns, one line per split inside each row and the strategy
        # under the model keep both metrics with their intervals within 80 columns.
        table = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                      padding=0, caption="*: the metric rows are sorted by; gap = rejected dPQ - chosen dPQ; w-dPQ: "
                                         "probability-weighted dPQ (from the judge's P(A)); P/Q win: win rates against "
                                         "the baseline, ties excluded",
                      caption_justify="left")
        splits = splits_of(group)
        table.add_column("#", justify="right")
        table.add_column("model / strategy", overflow="fold", min_width=12)  # folded, never cut
        table.add_column("split")
        table.add_column("n", justify="right")
        metric_columns = (("dpq", "dPQ"), ("ci", "95% CI"), ("wdpq", "w-dPQ"), ("wci", "95% CI"))
        for key, header in metric_columns:
            # The sorted-by metric is marked in its header.
            marked = (key == "dpq" and by == "dpq") or (key == "wdpq" and by == "weighted_dpq")
            table.add_column(header + ("*" if marked else ""), justify="right", no_wrap=True)
        table.add_column("P win", justify="right")
        table.add_column("Q win", justify="right")
        table.add_column("gap", justify="right", no_wrap=True)
        keys = ("split", "n", "dpq", "ci", "wdpq", "wci", "p", "q")
        for rank, row in enumerate(sort_rows(group["rows"], by), 1):
            lines: dict[str, list[str]] = {k: [] for k in keys}
            for split in splits:
                result = row["splits"].get(split)
                lines["split"].append(split)
                if result is None:
                    for k in keys[1:]:
                        lines[k].append("-")
                    continue
                lines["n"].append(str(result["items"]))
                lines["dpq"].append(fmt_dpq(result["dpq"]))
                lines["ci"].append(_short_ci(result["dpq_ci95"]))
                lines["wdpq"].append(fmt_dpq(result.get("weighted_dpq")))
                lines["wci"].append(_short_ci(result.get("weighted_dpq_ci95")))
                for key, name in (("p", "personalization"), ("q", "quality")):
                    rate = result[name]["win_rate"]
                    lines[key].append("n/a" if rate is None else f"{100 * rate:.0f}%")
            table.add_row(
                Text(str(rank)), Text.assemble(row["model"], "\n", (row["strategy"], "dim")),
                *(Text("\n".join(lines[k])) for k in keys),
                Text(fmt_dpq(row["gap"]), style="bold"),
            )
        console.print(table)
    console.print(Text(f"generated {doc['generated']} by persona-eval {doc['persona_eval_version']}", style="dim"))


# -- links ---------------------------------------------------------------------------------


def safe_href(link: str, source_dir: Path | None, out_dir: Path | None) -> str | None:
    """An href for a row's results file, or None when the link is not safe to emit.

    Relative links were written relative to the leaderboard file; the page may live in
    another folder, so they are rebased onto it.
    """
    parts = urlsplit(link)
    if parts.scheme in ("http", "https") and parts.netloc:
        return link
    if parts.scheme or parts.netloc or link.startswith("//") or "\\" in link or any(ord(c) < 32 for c in link):
        return None
    if link.startswith("/"):
        return None  # an absolute local path means nothing once the page is published
    if source_dir is not None and out_dir is not None:
        link = Path(os.path.relpath((source_dir / link).resolve(), out_dir.resolve())).as_posix()
    return quote(link, safe="/._-~")


# -- chart ---------------------------------------------------------------------------------


def _nice_domain(values: list[float]) -> tuple[float, float]:
    if not values:
        return -100.0, 100.0
    low, high = min(values + [0.0]), max(values + [0.0])
    low, high = math.floor(low / 10.0) * 10.0, math.ceil(high / 10.0) * 10.0
    if high - low < 20:
        high, low = high + 10, low - 10
    return max(-100.0, low), min(100.0, high)


def chart_layout(group: dict[str, Any], rows: list[dict[str, Any]], width: int = 820, metric: str = "dpq") -> dict[str, Any]:
    """Coordinates of an SVG dot-and-whisker chart of ``metric`` (dpq or weighted_dpq): one lane per model and split."""
    splits = splits_of(group)
    metric_label = SORT_METRICS[metric]
    undefined = "undefined (no decided comparisons)" if metric == "dpq" else "n/a (no P(A))"

    def point(result):
        return result.get(metric), result.get(f"{metric}_ci95")

    values = []
    for row in rows:
        for result in row["splits"].values():
            value, ci = point(result)
            if value is not None:
                values.append(value)
            if ci:
                values.extend(ci)
    low, high = _nice_domain(values)
    left, right, top, lane, gap = 260, 30, 46, 18, 14
    plot_w = width - left - right
    row_h = lane * len(splits) + gap

    def x(value: float) -> float:
        return round(left + (min(max(value, low), high) - low) / (high - low) * plot_w, 1)

    step = 10 if high - low <= 100 else 20
    ticks = [{"x": x(v), "label": f"{v:+.0f}" if v else "0"} for v in range(int(low), int(high) + 1, step)]
    items = []
    for r, row in enumerate(rows):
        y0 = top + r * row_h
        label = f"{row['model']} ({row['strategy']})"
        lanes = []
        for s, split in enumerate(splits):
            result = row["splits"].get(split)
            y = y0 + s * lane + lane / 2
            entry = {"split": split, "y": round(y, 1), "cls": f"split-{s % 4}"}
            value, ci = point(result) if result is not None else (None, None)
            if value is None:
                entry.update(defined=False, text=f"{split}: {'no run' if result is None else undefined}")
            else:
                entry.update(
                    defined=True, cx=x(value),
                    x1=x(ci[0]) if ci else None, x2=x(ci[1]) if ci else None,
                    text=f"{split}: {metric_label} {fmt_dpq(value)} {fmt_ci(ci)}".strip(),
                )
            lanes.append(entry)
        items.append({
            "label": label if len(label) <= 34 else label[:33] + "…", "full_label": label,
            "y_label": round(y0 + lane * len(splits) / 2 + 4, 1), "lanes": lanes,
            "band_y": y0 - gap / 2 + 1, "band_h": row_h, "odd": r % 2 == 1,
        })
    height = top + len(rows) * row_h + 20
    return {
        "width": width, "height": height, "left": left, "right": width - right, "top": top - 14, "bottom": height - 14,
        "zero": x(0.0), "ticks": ticks, "rows": items, "splits": [{"name": s, "cls": f"split-{i % 4}"} for i, s in enumerate(splits)],
        "metric": metric_label,
    }


# -- page ----------------------------------------------------------------------------------


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every string from results is escaped, in text and attributes alike
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _view_row(row: dict[str, Any], rank: int, splits: list[str], source_dir: Path | None, out_dir: Path | None,
              links: bool) -> dict[str, Any]:
    cells = {}
    for split in splits:
        result = row["splits"].get(split)
        if result is None:
            cells[split] = None
            continue
        criteria = {}
        for name in ("personalization", "quality"):
            c = result[name]
            criteria[name] = {"rate": fmt_rate(c["win_rate"]), "sort": c["win_rate"], "ci": fmt_ci(c["win_rate_ci95"], percent=True),
                              "counts": counts_text(c)}
        cells[split] = {
            "dpq": fmt_dpq(result["dpq"]), "sort": result["dpq"], "ci": fmt_ci(result["dpq_ci95"]), "items": result["items"],
            "wdpq": fmt_dpq(result.get("weighted_dpq")), "wsort": result.get("weighted_dpq"),
            "wci": fmt_ci(result.get("weighted_dpq_ci95")),
            "criteria": criteria, "href": safe_href(result["results_file"], source_dir, out_dir) if links else None,
            "results_file": result["results_file"], "run_dir": result["run_dir"],
        }
    counts = sorted({cell["items"] for cell in cells.values() if cell is not None})
    return {
        "items": ", ".join(map(str, counts)) if len(counts) == 1 else None, "items_sort": max(counts),
        "rank": rank, "model": row["model"], "strategy": row["strategy"], "identity": short_identity(row["identity"]),
        "gap": None if row["gap"] is None else fmt_dpq(row["gap"]), "gap_sort": row["gap"], "cells": cells,
    }


def _retriever_label(retriever: dict[str, Any] | None) -> str | None:
    if retriever is None:
        return None
    name = retriever.get("name") or retriever.get("model") or "retriever"
    return f"{name} ({short_identity(retriever)})"


def render_html(doc: dict[str, Any], *, source_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                links: bool = True) -> str:
    """The whole page as a string (``doc`` must be a valid leaderboard).

    ``source_dir`` is the leaderboard file's folder and ``out_dir`` the page's: relative
    links to results files are rebased from one to the other. ``links=False`` shows run
    directories as text, for pages published where the runs are not.
    """
    from markupsafe import Markup

    css = (TEMPLATES / "page.css").read_text(encoding="utf-8")
    js = (TEMPLATES / "page.js").read_text(encoding="utf-8")
    csp = (
        f"default-src 'none'; style-src {_csp_hash(css)}; script-src {_csp_hash(js)}; "
        "img-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'"
    )
    src = Path(source_dir) if source_dir is not None else None
    dst = Path(out_dir) if out_dir is not None else None
    by = sort_by_of(doc)
    groups = []
    for index, group in enumerate(doc["groups"]):
        splits = splits_of(group)
        rows = sort_rows(group["rows"], by)
        groups.append({
            "index": index, "group": group, "splits": splits, "has_gap": {"chosen", "rejected"} <= set(splits),
            "rows": [_view_row(row, rank, splits, src, dst, links) for rank, row in enumerate(rows, 1)],
            "chart": chart_layout(group, rows, metric=by),
            "judge_identity": short_identity(group["judges"]["identity"]),
            "baseline_identity": short_identity(group["baseline"]["identity"]),
            "source_identity": short_identity(group["persona_source"]["identity"]),
            "retriever": _retriever_label(group["persona_source"]["retriever"]),
        })
    template = _environment().get_template("page.html.j2")
    # css and js are this package's own files (hashed into the CSP above), never results data.
    return template.render(doc=doc, groups=groups, csp=csp, css=Markup(css), js=Markup(js), sort_by=by,
                           sort_label=SORT_METRICS[by])


def write_page(doc: dict[str, Any], out_dir: str | os.PathLike, *, source_dir: str | os.PathLike | None = None,
               links: bool = True) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError("exists and is not a directory", where=str(out))
    return write_page_file(render_html(doc, source_dir=source_dir, out_dir=out, links=links), out, PAGE_NAME)
