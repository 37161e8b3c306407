"""The run browser: one static HTML page to read a run item by item (`persona-eval view`).

This module turns a loaded run (its config, generation and judgment records, results, and
the outcome of every item and criterion, which the caller computes with
`persona_eval.scoring`) into the page's data document, and renders it with the Jinja2
template and the JavaScript and CSS in ``templates/``:

- `check_generations` / `check_judgments` reject records the page cannot show, naming the
  file and line, before anything is computed or written;
- `JudgeSet` is one folder of verdicts (the run's own, or a ``judge-*`` re-judging), with its
  outcomes per judge label and, for several judges, the majority;
- `build_view` makes the data document: the items as columns, each judge set's verdicts
  per item, and one *choice* per judge the page can switch to (its outcomes as one letter
  per item and criterion, and its summary already formatted);
- `render_html` and `write_page` make and write the page.

The page never fetches anything: CSS and JavaScript are inline and allowed by their SHA-256
in a Content-Security-Policy, and the data sits in a ``<script type="application/json">``
element that the script reads with ``JSON.parse``. Every string of the run reaches the page
through ``textContent``, never as markup.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from persona_eval.errors import UsageError
from persona_eval.storage.files import write_page as write_page_file
from persona_eval.versions import __version__

TEMPLATES = Path(__file__).with_name("templates")
PAGE_NAME = "index.html"
SCHEMA = "persona-eval/run-view@1"
ROLES = ("test", "baseline")
ORDERS = ("baseline_first", "test_first")  # the index of an order in a verdict row
# One letter per outcome keeps a 10,000-item judge's outcomes a 10 kB string per criterion.
OUTCOME_CODES = {"test": "w", "baseline": "l", "tie": "t", "unscored": "u"}
NOT_JUDGED = "-"
PREFERRED_CRITERIA = ("personalization", "quality")


# -- record checks ---------------------------------------------------------------------------


def _line_of(path: Path, index: int) -> int:
    """The line number of the index-th record of a JSON Lines file (blank lines hold none)."""
    try:
        with open(path, "rb") as handle:
            seen = -1
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    seen += 1
                    if seen == index:
                        return number
    except OSError:
        pass
    return index + 1


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _bad(path: Path, index: int, message: str) -> UsageError:
    return UsageError(message, where=f"{path}:{_line_of(path, index)}")


def check_generations(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Each generation record needs an item id and a role the page knows; text fields must be text."""
    path = Path(path)
    for index, record in enumerate(records):
        if not _is_id(record.get("item_id")):
            raise _bad(path, index, "generation record without an item_id")
        if record.get("role") not in ROLES:
            raise _bad(path, index, f"generation record with role {record.get('role')!r} (expected test or baseline)")
        for key in ("prompt", "persona", "input", "response", "model", "strategy", "persona_source"):
            if record.get(key) is not None and not isinstance(record[key], str):
                raise _bad(path, index, f"generation record whose {key} is not text")


def check_judgments(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Each judgment record needs an item id, a criterion, an order and an A/B/null winner."""
    path = Path(path)
    for index, record in enumerate(records):
        if not _is_id(record.get("item_id")):
            raise _bad(path, index, "judgment record without an item_id")
        if not isinstance(record.get("criterion"), str) or not record["criterion"]:
            raise _bad(path, index, "judgment record without a criterion")
        if record.get("order") not in ORDERS:
            raise _bad(path, index, f"judgment record with order {record.get('order')!r} (expected baseline_first or test_first)")
        if record.get("winner") not in ("A", "B", None):
            raise _bad(path, index, f"judgment record with winner {record.get('winner')!r} (expected A, B or null)")
        if record.get("judge") is not None and not isinstance(record["judge"], str):
            raise _bad(path, index, "judgment record whose judge label is not text")


# -- formatting ------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A finite number, or None: NaN would make the embedded JSON unreadable to JSON.parse."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _fixed(value: Any, digits: int) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


def _signed(value: Any) -> str:
    number = _num(value)
    return "undefined" if number is None else f"{number:+.1f}"


def _interval(ci: Any, digits: int, signed: bool = False) -> str:
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(v) is not None for v in ci)):
        return ""
    spec = f"+.{digits}f" if signed else f".{digits}f"
    return f"[{format(float(ci[0]), spec)}, {format(float(ci[1]), spec)}]"


def _count(value: Any) -> int:
    return int(value) if _num(value) is not None else 0


def health_line(health: Any) -> str:
    """The judge-health line of the terminal report, as one string."""
    if not isinstance(health, Mapping):
        return ""
    text = (
        f"tie rate {_fixed(health.get('tie_rate'), 2)}, position-A wins {_fixed(health.get('position_a_win_share'), 2)}, "
        f"mean words test/baseline {_fixed(health.get('mean_words_test'), 0)}/{_fixed(health.get('mean_words_baseline'), 0)}, "
        f"length-win correlation {_fixed(health.get('length_win_correlation'), 2)}"
    )
    if _count(health.get("unscored_verdicts")):
        reasons = health.get("unscored_reasons")
        top = next(iter(reasons), None) if isinstance(reasons, Mapping) else None
        text += f", unscored verdicts {_count(health['unscored_verdicts'])}" + (f" (mostly: {top})" if top else "")
    return text


def summary_of(metrics: Any) -> dict[str, Any] | None:
    """A metrics block of results.json, formatted for the summary strip (None when there is none).

    ``weighted`` and ``headline`` are optional: runs scored before they existed have neither.
    """
    if not isinstance(metrics, Mapping):
        return None
    criteria = []
    for name, row in (metrics.get("criteria") or {}).items():
        if not isinstance(row, Mapping):
            continue
        criteria.append({
            "name": str(name), "rate": _fixed(row.get("win_rate"), 3), "ci": _interval(row.get("win_rate_ci95"), 2),
            "wins": _count(row.get("test_wins")), "losses": _count(row.get("baseline_wins")),
            "ties": _count(row.get("ties")), "unscored": _count(row.get("unscored")),
        })
    headline = metrics.get("headline") if metrics.get("headline") in ("dpq", "weighted_dpq") else "dpq"
    summary: dict[str, Any] = {
        "items": _count(metrics.get("items")), "criteria": criteria, "headline": headline,
        "dpq": {"value": _signed(metrics.get("dpq")), "ci": _interval(metrics.get("dpq_ci95"), 1, signed=True)},
        "health": health_line(metrics.get("judge_health")),
    }
    weighted = metrics.get("weighted")
    if isinstance(weighted, Mapping):
        summary["weighted"] = {
            "value": _signed(weighted.get("dpq")), "ci": _interval(weighted.get("dpq_ci95"), 1, signed=True),
            "method": str(weighted.get("method") or ""),
            "criteria": [
                {"name": str(name), "rate": _fixed(row.get("win_rate"), 3), "ci": _interval(row.get("win_rate_ci95"), 2),
                 "items": _count(row.get("items"))}
                for name, row in (weighted.get("criteria") or {}).items() if isinstance(row, Mapping)
            ],
        }
    voting = metrics.get("voting")
    if isinstance(voting, Mapping) and voting.get("comparisons") is not None:
        summary["voting"] = (
            f"judges unanimous on {_count(voting.get('unanimous'))} of {_count(voting.get('comparisons'))} comparisons; "
            "no majority counts as a tie, all unscored as unscored"
        )
    return summary


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


# -- the data document -----------------------------------------------------------------------


@dataclass
class JudgeSet:
    """One folder of verdicts: the run's own (``folder=""``) or a ``judge-*`` re-judging.

    `outcomes` is judge label -> item id -> criterion -> test/baseline/tie/unscored (what
    `scoring.metrics.item_outcomes` gives per label); `majority` is the majority vote of
    several labels (`scoring.voting.majority_outcomes`), None with one judge.
    """

    folder: str
    config: Mapping[str, Any]
    results: Mapping[str, Any] | None
    judgments: Sequence[Mapping[str, Any]]
    outcomes: Mapping[str, Mapping[str, Mapping[str, str]]]
    majority: Mapping[str, Mapping[str, str]] | None = None

    def labels(self) -> list[str]:
        """The judge labels in the order the run named them, then any only the records name."""
        named = []
        for source in ((self.results or {}).get("judges"), self.config.get("judges")):
            for judge in source or ():
                label = judge.get("label") if isinstance(judge, Mapping) else judge
                if isinstance(label, str) and label not in named:
                    named.append(label)
            if named:
                break
        seen = [label for label in self.outcomes if label not in named]
        return named + seen

    def judge_model(self) -> str:
        model = (self.results or {}).get("judge_model") or self.config.get("judge_model")
        return str(model) if model else ""


def _criteria(run_config: Mapping[str, Any], judge_sets: Sequence[JudgeSet]) -> list[str]:
    """The task's criteria (personalization and quality first), then any other a record names."""
    found: list[str] = []
    try:
        found.extend(str(c) for c in run_config["task"]["resolved"]["judge"]["criteria"])
    except (KeyError, TypeError):
        pass
    for judge_set in judge_sets:
        for record in judge_set.judgments:
            if record["criterion"] not in found:
                found.append(record["criterion"])
    ordered = [c for c in PREFERRED_CRITERIA if c in found]
    return ordered + [c for c in found if c not in ordered]


def _items(generations: Sequence[Mapping[str, Any]], judge_sets: Sequence[JudgeSet]) -> tuple[list[str], dict[str, Any]]:
    """Item ids in the run's order and the items' fields as columns (one list per field)."""
    index: dict[str, int] = {}
    columns: dict[str, list[Any]] = {key: [] for key in (
        "id", "prompt", "persona", "source", "provenance", "test", "baseline", "test_input", "baseline_input",
        "test_model", "baseline_model", "test_strategy", "baseline_strategy")}

    def row(item_id: str) -> int:
        if item_id not in index:
            index[item_id] = len(columns["id"])
            for key, values in columns.items():
                values.append(item_id if key == "id" else None)
        return index[item_id]

    for record in generations:
        i = row(str(record["item_id"]))
        role = record["role"]
        if columns["prompt"][i] is None:
            columns["prompt"][i] = record.get("prompt")
        # The persona is the one the test model answered for; the baseline record repeats it.
        if role == "test" or columns["persona"][i] is None:
            columns["persona"][i] = record.get("persona")
            columns["source"][i] = record.get("persona_source")
            provenance = record.get("persona_provenance")
            columns["provenance"][i] = (
                {str(k): _text(v) for k, v in provenance.items()} if isinstance(provenance, Mapping)
                else (_text(provenance) or None)
            )
        columns[role][i] = record.get("response")
        columns[f"{role}_input"][i] = record.get("input")
        columns[f"{role}_model"][i] = record.get("model")
        columns[f"{role}_strategy"][i] = record.get("strategy")
    for judge_set in judge_sets:  # an item judged but not generated (a hand-edited run) still shows
        for record in judge_set.judgments:
            row(str(record["item_id"]))
    ids = columns["id"]
    # Model and strategy are the same for every item of a run: keep them once unless they differ.
    for key in ("test_model", "baseline_model", "test_strategy", "baseline_strategy"):
        values = {v for v in columns[key] if v is not None}
        if len(values) <= 1:
            columns[key] = next(iter(values), None)
    return ids, columns


def _choice_name(label: str, judge_model: str) -> str:
    return label if "@" in label or not judge_model else f"{label} on {judge_model}"


def build_view(
    *,
    run_dir: str | os.PathLike,
    config: Mapping[str, Any],
    results: Mapping[str, Any] | None,
    generations: Sequence[Mapping[str, Any]],
    judge_sets: Sequence[JudgeSet],
) -> dict[str, Any]:
    """The page's data document (see the module docstring); records must have passed the checks."""
    ids, columns = _items(generations, judge_sets)
    position = {item_id: i for i, item_id in enumerate(ids)}
    criteria = _criteria(config, judge_sets)
    criterion_index = {c: i for i, c in enumerate(criteria)}
    sets, choices = [], []
    for set_index, judge_set in enumerate(judge_sets):
        labels = judge_set.labels()
        label_index = {label: i for i, label in enumerate(labels)}
        verdicts: list[list[list[Any]]] = [[] for _ in ids]
        for record in judge_set.judgments:
            label = record.get("judge") or ""
            if label not in label_index:
                label_index[label] = len(labels)
                labels.append(label)
            attempts = record.get("attempts")
            verdicts[position[str(record["item_id"])]].append([
                criterion_index[record["criterion"]], ORDERS.index(record["order"]), record.get("winner"),
                _num(record.get("prob_a")), _text(record.get("raw")), _text(record.get("unscored_reason")) or None,
                _count(attempts) if attempts is not None else None, label_index[label],
            ])
        for row in verdicts:  # criterion, then order, then judge: the same on every item
            row.sort(key=lambda v: (v[0], v[7], v[1]))
        judge_model = judge_set.judge_model()
        results_doc = judge_set.results or {}
        per_judge = results_doc.get("per_judge") if isinstance(results_doc.get("per_judge"), Mapping) else {}
        where = judge_set.folder or "this run"
        sets.append({"folder": judge_set.folder, "labels": labels, "judge_model": judge_model, "verdicts": verdicts})

        def choice(name: str, label: int | None, outcomes: Mapping[str, Mapping[str, str]], metrics: Any) -> None:
            codes = []
            for criterion in criteria:
                letters = [NOT_JUDGED] * len(ids)
                for item_id, per_item in outcomes.items():
                    outcome = per_item.get(criterion)
                    if outcome is not None and str(item_id) in position:
                        letters[position[str(item_id)]] = OUTCOME_CODES.get(outcome, "u")
                codes.append("".join(letters))
            choices.append({"name": name, "where": where, "set": set_index, "label": label, "outcomes": codes,
                            "summary": summary_of(metrics)})

        judged = [label for label in labels if label]
        if len(judged) > 1:
            choice(f"majority of {', '.join(judged)}" + (f" on {judge_model}" if judge_model else ""), None,
                   judge_set.majority or {}, results_doc.get("metrics"))
            for label in judged:
                choice(_choice_name(label, judge_model), label_index[label], judge_set.outcomes.get(label, {}),
                       per_judge.get(label))
        else:
            label = judged[0] if judged else ""
            outcomes = judge_set.outcomes.get(label) or next(iter(judge_set.outcomes.values()), {})
            choice(_choice_name(label or "judge", judge_model), None, outcomes,
                   results_doc.get("metrics") or per_judge.get(label))
    source = (results or {}).get("persona_source") or config.get("persona_source") or {}
    strategies = (results or {}).get("strategies") or config.get("strategies") or {}
    task = (results or {}).get("task") or config.get("task") or {}
    run = {
        "dir": str(run_dir), "run_key": _text((results or {}).get("run_key") or config.get("run_key")),
        "task": _text(task.get("name") if isinstance(task, Mapping) else task),
        "split": _text((results or {}).get("split") or config.get("split")),
        "model": _text((results or {}).get("model") or config.get("model")),
        "baseline": _text((results or {}).get("baseline") or config.get("baseline")),
        "test_strategy": _text(strategies.get("test")) if isinstance(strategies, Mapping) else "",
        "baseline_strategy": _text(strategies.get("baseline")) if isinstance(strategies, Mapping) else "",
        "persona_source": _text(source.get("name") if isinstance(source, Mapping) else source),
        "finished": results is not None,
    }
    return {"schema": SCHEMA, "run": run, "criteria": criteria, "items": columns, "sets": sets, "choices": choices}


# -- the page --------------------------------------------------------------------------------


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def embed_json(data: Any) -> str:
    """JSON that is safe inside a ``<script type="application/json">`` element.

    ``<``, ``>`` and ``&`` become JSON escapes, so no text of the run can close the element
    (``</script>``) or open a comment (``<!--``); JSON.parse reads the escapes back as the very
    same characters.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def page_title(view: Mapping[str, Any]) -> str:
    run = view["run"]
    parts = [p for p in (run.get("task"), run.get("split") and f"{run['split']} personas") if p]
    models = f"{run.get('model') or '?'} vs {run.get('baseline') or '?'}"
    return " · ".join([*parts, models])


def render_html(view: Mapping[str, Any]) -> str:
    """The whole page as one string."""
    import jinja2
    from markupsafe import Markup

    css = (TEMPLATES / "run_view.css").read_text(encoding="utf-8")
    js = (TEMPLATES / "run_view.js").read_text(encoding="utf-8")
    # Only the page's own style and script blocks may run (by hash); the JSON data element is
    # not a script to the browser, so it needs no allowance.
    csp = (
        f"default-src 'none'; style-src {_csp_hash(css)}; script-src {_csp_hash(js)}; "
        "img-src 'none'; connect-src 'none'; font-src 'none'; base-uri 'none'; form-action 'none'"
    )
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    template = environment.get_template("run_view.html.j2")
    # css, js and the escaped JSON are inserted as they are; every other value is autoescaped.
    return template.render(
        title=page_title(view), run=view["run"], items=len(view["items"]["id"]), version=__version__, csp=csp,
        css=Markup(css), js=Markup(js), data=Markup(embed_json(view)),
    )


def write_page(view: Mapping[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/index.html`` whole or not at all; returns its path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError("exists and is not a directory", where=str(out))
    return write_page_file(render_html(view), out, PAGE_NAME)
