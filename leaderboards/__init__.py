"""Leaderboards: a versioned JSON Schema, building from runs, an HTML page, publishing.

A leaderboard puts side by side only results that are comparable: the same task hash,
judge identity, baseline (model, identity, strategy) and persona source. Each row is a
test model and strategy, with dPQ, the probability-weighted dPQ, P and Q win rates (all
with 95% intervals) on the chosen and rejected splits and the rejected - chosen gap, the
hard-benchmark column. Rows are sorted by dPQ or by the weighted dPQ (``sort_by``).

    build.py     results.json files / run directories -> leaderboard JSON (schema-checked)
    render.py    leaderboard JSON -> a rich terminal table, or one static HTML page
    publish.py   leaderboard JSON (+ page) -> a Hugging Face dataset repo or a local folder
    schema/      leaderboard-v<N>.json, the JSON Schema of each format version
    templates/   the Jinja2 template of the HTML page
    demo.json    the demo leaderboard (README.md says how it is regenerated)

The import package is ``persona_eval.leaderboards``; the folder is ``leaderboards/``.
The CLI commands live in ``persona_eval.plugins.commands.leaderboard``.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_ID = "persona-eval/leaderboard@1"
SCHEMA_VERSION = 1
HERE = Path(__file__).resolve().parent
SPLIT_ORDER = ("rejected", "chosen")
# What rows may be sorted by -> how the page and the terminal name it.
SORT_METRICS = {"dpq": "dPQ", "weighted_dpq": "weighted dPQ"}


def sort_by_of(doc: dict[str, Any]) -> str:
    """The metric a leaderboard's rows are sorted by; files from before ``sort_by`` used dPQ."""
    return doc.get("sort_by") or "dpq"


def schema_path(version: int = SCHEMA_VERSION) -> Path:
    return HERE / "schema" / f"leaderboard-v{version}.json"


@lru_cache(maxsize=None)
def load_schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    return json.loads(schema_path(version).read_text(encoding="utf-8"))


def _json_path(parts) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _non_finite(value: Any, parts: tuple) -> tuple | None:
    """The path of the first NaN or infinite number in a document (the schema's ranges let NaN through)."""
    if isinstance(value, float) and not math.isfinite(value):
        return parts
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        found = _non_finite(inner, (*parts, key))
        if found is not None:
            return found
    return None


def _semantic_errors(doc: dict[str, Any]) -> list[str]:
    """What a JSON Schema cannot say: finite numbers, ordered intervals, a consistent gap, unique rows."""
    errors = []
    bad = _non_finite(doc, ())
    if bad is not None:
        errors.append(f"{_json_path(bad)}: not a finite number (NaN or Infinity, which JSON cannot hold)")
    for g, group in enumerate(doc.get("groups", [])):
        seen: dict[tuple[str, str], int] = {}
        for r, row in enumerate(group.get("rows", [])):
            where = f"$.groups[{g}].rows[{r}]"
            key = (row.get("model"), row.get("strategy"))
            if key in seen:
                errors.append(f"{where}: duplicate row for model {key[0]!r} strategy {key[1]!r} (also rows[{seen[key]}])")
            seen[key] = r
            splits = row.get("splits", {})
            for split, result in splits.items():
                intervals = [("dpq_ci95", result.get("dpq_ci95")), ("weighted_dpq_ci95", result.get("weighted_dpq_ci95"))] + [
                    (f"{c}.win_rate_ci95", result.get(c, {}).get("win_rate_ci95")) for c in ("personalization", "quality")
                ]
                for name, ci in intervals:
                    if ci is not None and ci[0] > ci[1]:
                        errors.append(f"{where}.splits.{split}.{name}: low {ci[0]} is above high {ci[1]}")
            chosen, rejected = splits.get("chosen", {}).get("dpq"), splits.get("rejected", {}).get("dpq")
            expected = None if chosen is None or rejected is None else rejected - chosen
            gap = row.get("gap")
            if (expected is None) != (gap is None) or (gap is not None and abs(gap - expected) > 1e-6):
                errors.append(f"{where}.gap: {gap} is not rejected dPQ - chosen dPQ ({expected})")
    return errors


def validation_errors(doc: Any) -> list[str]:
    """Every problem with a leaderboard document, each as 'JSON path: message'."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = [
        f"{_json_path(e.absolute_path)}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    ]
    if not errors and isinstance(doc, dict):
        errors = _semantic_errors(doc)
    return errors


def validate(doc: Any, where: str | None = None) -> None:
    """Raise UsageError naming the first problem (and how many more there are)."""
    from persona_eval.errors import UsageError

    errors = validation_errors(doc)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UsageError(f"not a valid leaderboard: {errors[0]}{more}", where=where)


def load_leaderboard(path: str | Path) -> dict[str, Any]:
    """Read and validate a leaderboard file; bad input is a one-line UsageError."""
    from persona_eval.errors import UsageError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the leaderboard: {exc.strerror or exc}", where=str(path)) from exc
    try:
        doc = json.loads(text)
    except RecursionError as exc:
        raise UsageError("not JSON: nested too deeply", where=str(path)) from exc
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise UsageError(f"not JSON: {exc}", where=f"{path}:{line}" if line else str(path)) from exc
    validate(doc, where=str(path))
    return doc
