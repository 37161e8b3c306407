"""Building a leaderboard document from results.json files or run directories.

Results are comparable when they share the task hash (and data hash), the judge
identity, the baseline (model spec, identity and strategy) and the persona source (name
and identity). Anything else is refused with an error naming the file and the first
field that differs, unless ``allow_mixed``, which puts each comparable set in its own
group (a separate table on the page). The document is validated against the schema
before it is written, and written atomically.

Each split result carries the paper's dPQ and, beside it, the probability-weighted dPQ
(``weighted_dpq``, from the judge's P(A); null for results without one, such as runs from
before it existed). Rows are sorted by one of the two (``sort_by``, default ``dpq``).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from persona_eval.errors import UsageError
from persona_eval.hashing import stable_hash
from persona_eval.pipeline.results import RESULTS_SCHEMA
from persona_eval.storage.files import atomic_write_json
from persona_eval.versions import __version__

from . import SCHEMA_ID, SCHEMA_VERSION, SORT_METRICS, SPLIT_ORDER, validate

# (field, what it is): the comparability key, in the order differences are reported.
COMPARABILITY_FIELDS: tuple[tuple[str, str], ...] = (
    ("task.hash", "task"),
    ("task.data_hash", "task data"),
    ("judges", "judges"),
    ("identities.judges", "judge identity"),
    ("baseline", "baseline model"),
    ("identities.baseline", "baseline identity"),
    ("strategies.baseline", "baseline strategy"),
    ("persona_source.name", "persona source"),
    ("persona_source.identity", "persona source identity"),
)

REQUIRED_FIELDS = (
    "task.name", "task.version", "task.hash", "split", "model", "baseline", "strategies.test", "strategies.baseline",
    "persona_source.name", "persona_source.identity", "judges", "judge_model", "identities.test",
    "identities.baseline", "identities.judges", "metrics.dpq", "metrics.dpq_ci95", "metrics.items",
    "metrics.criteria.personalization", "metrics.criteria.quality",
)
CRITERION_FIELDS = ("win_rate", "win_rate_ci95", "test_wins", "baseline_wins", "ties", "unscored")
MISSING = object()
# The results formats this builder reads; a file without ``schema`` predates the field and is read as @1.
RESULTS_SCHEMAS = (RESULTS_SCHEMA,)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return MISSING
        obj = obj[part]
    return obj


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any]:
    """The deepest dotted path where two JSON values differ, with both values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key, MISSING) != b.get(key, MISSING):
                return _first_difference(a.get(key, MISSING), b.get(key, MISSING), f"{path}.{key}")
    return path, a, b


def _show(value: Any, limit: int = 80) -> str:
    text = "(absent)" if value is MISSING else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- reading results ---------------------------------------------------------------------


def results_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand the command line: results.json files, run directories, or folders of runs."""
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir() and (path / "results.json").is_file():
            found.append(path / "results.json")
        elif path.is_dir():
            inner = sorted(p for p in path.glob("*/results.json") if p.is_file())
            if not inner:
                raise UsageError("no results.json here or in its sub-folders (is the run finished?)", where=str(path))
            found.extend(inner)
        else:
            raise UsageError("no such results file or run directory", where=str(path))
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def read_results(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read: {exc.strerror or exc}", where=str(path)) from exc
    try:
        results = json.loads(text)
    except RecursionError as exc:
        raise UsageError("not JSON: nested too deeply", where=str(path)) from exc
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise UsageError(f"not JSON: {exc}", where=f"{path}:{line}" if line else str(path)) from exc
    if not isinstance(results, dict):
        raise UsageError("not a persona-eval results file (expected a JSON object)", where=str(path))
    schema = results.get("schema")
    if schema is not None and not (isinstance(schema, str) and schema.startswith("persona-eval/results@")):
        raise UsageError(f"not a persona-eval results file (schema {schema!r})", where=str(path))
    if schema is not None and schema not in RESULTS_SCHEMAS:
        raise UsageError(f"schema: unknown results schema version {schema!r} (this persona-eval reads "
                         f"{', '.join(RESULTS_SCHEMAS)}); upgrade persona-eval to build from it", where=str(path))
    for dotted in REQUIRED_FIELDS:
        if _get(results, dotted) is MISSING:
            raise UsageError(f"results file lacks the field {dotted!r}", where=str(path))
    for criterion in ("personalization", "quality"):
        row = results["metrics"]["criteria"][criterion]
        for name in CRITERION_FIELDS:
            if _get(row, name) is MISSING:
                raise UsageError(f"results file lacks the field 'metrics.criteria.{criterion}.{name}'", where=str(path))
    if not isinstance(results["judges"], list) or not results["judges"]:
        raise UsageError("field 'judges' must be a non-empty list", where=str(path))
    check_metrics(results, path)
    return results


# -- checking the numbers ----------------------------------------------------------------

# How far a recorded dPQ or win rate may be from the one recomputed from its parts: float
# rounding only (results are written unrounded), never a different result.
TOLERANCE = 1e-6


def _non_finite(value: Any, dotted: str) -> str | None:
    """The dotted path of the first NaN or infinite number inside `value` (JSON allows neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return dotted
    if isinstance(value, dict):
        for key, inner in value.items():
            found = _non_finite(inner, f"{dotted}.{key}" if dotted else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found = _non_finite(inner, f"{dotted}[{index}]")
            if found:
                return found
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_value(path: Path, dotted: str, value: Any, low: float, high: float, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not _number(value):
        raise UsageError(f"{dotted}: {_show(value)} is not a number", where=str(path))
    if not low <= value <= high:
        raise UsageError(f"{dotted}: {value} is outside [{low:g}, {high:g}]", where=str(path))


def _check_interval(path: Path, dotted: str, value: Any, low: float, high: float) -> None:
    if value is None:
        return
    if not isinstance(value, list) or len(value) != 2:
        raise UsageError(f"{dotted}: {_show(value)} is not an interval [low, high]", where=str(path))
    for index, bound in enumerate(value):
        _check_value(path, f"{dotted}[{index}]", bound, low, high, optional=False)
    if value[0] > value[1]:
        raise UsageError(f"{dotted}: low {value[0]} is above high {value[1]}", where=str(path))


def _check_count(path: Path, dotted: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{dotted}: {_show(value)} is not a count (a non-negative integer)", where=str(path))


def _check_dpq(path: Path, dotted: str, dpq: Any, p: Any, q: Any, parts: str) -> None:
    """dPQ = 100 x (P + Q - 1) of its own win rates, null exactly when one of them is."""
    expected = None if p is None or q is None else 100.0 * (p + q - 1.0)
    if (dpq is None) != (expected is None) or (expected is not None and abs(dpq - expected) > 100 * TOLERANCE):
        raise UsageError(f"{dotted}: {dpq} contradicts its own win rates: 100 x ({parts}) gives {expected}",
                         where=str(path))


def _check_rate(path: Path, where: str, row: dict[str, Any]) -> None:
    """A win rate is its own counts' test_wins / (test_wins + baseline_wins): ties excluded, null with none decided."""
    decided = row["test_wins"] + row["baseline_wins"]
    expected = row["test_wins"] / decided if decided else None
    rate = row["win_rate"]
    if (rate is None) != (expected is None) or (expected is not None and abs(rate - expected) > TOLERANCE):
        raise UsageError(f"{where}.win_rate: {rate} contradicts its own counts: test_wins / (test_wins + baseline_wins) = "
                         f"{row['test_wins']}/{decided} gives {expected}", where=str(path))


def check_metrics(results: dict[str, Any], path: Path) -> None:
    """The numbers a leaderboard shows: finite, in range, and agreeing with each other.

    dPQ (and the weighted dPQ) in [-100, 100] and equal to 100 x (P + Q - 1) of the recorded win
    rates; each win rate in [0, 1] and equal to test_wins / (test_wins + baseline_wins) of its own
    counts, so a dPQ that contradicts the counts is refused; intervals ordered and in range; counts
    non-negative integers;
    null where a value is undefined (a split with no decided pairs). Errors name the file and field.
    """
    bad = _non_finite(results, "")
    if bad:
        raise UsageError(f"{bad}: not a finite number (NaN, Infinity or beyond the range of a double, "
                         "which JSON cannot hold)", where=str(path))
    metrics = results["metrics"]
    if not isinstance(metrics, dict) or not isinstance(metrics["criteria"], dict):
        raise UsageError("metrics: not an object with criteria", where=str(path))
    _check_value(path, "metrics.dpq", metrics["dpq"], -100, 100)
    _check_interval(path, "metrics.dpq_ci95", metrics["dpq_ci95"], -100, 100)
    _check_count(path, "metrics.items", metrics["items"])
    rates = {}
    for criterion in ("personalization", "quality"):
        row = metrics["criteria"][criterion]
        where = f"metrics.criteria.{criterion}"
        if not isinstance(row, dict):
            raise UsageError(f"{where}: not an object", where=str(path))
        _check_value(path, f"{where}.win_rate", row["win_rate"], 0, 1)
        _check_interval(path, f"{where}.win_rate_ci95", row["win_rate_ci95"], 0, 1)
        for name in ("test_wins", "baseline_wins", "ties", "unscored"):
            _check_count(path, f"{where}.{name}", row[name])
        _check_rate(path, where, row)
        rates[criterion] = row["win_rate"]
    _check_dpq(path, "metrics.dpq", metrics["dpq"], rates["personalization"], rates["quality"],
               "metrics.criteria.personalization.win_rate + metrics.criteria.quality.win_rate - 1")
    weighted = metrics.get("weighted")
    if weighted is None:
        return  # results from before the weighted preference existed
    if not isinstance(weighted, dict):
        raise UsageError(f"metrics.weighted: {_show(weighted)} is not an object", where=str(path))
    _check_value(path, "metrics.weighted.dpq", weighted.get("dpq"), -100, 100)
    _check_interval(path, "metrics.weighted.dpq_ci95", weighted.get("dpq_ci95"), -100, 100)
    criteria = weighted.get("criteria")
    if criteria is None:
        return
    if not isinstance(criteria, dict):
        raise UsageError(f"metrics.weighted.criteria: {_show(criteria)} is not an object", where=str(path))
    for criterion, row in criteria.items():
        where = f"metrics.weighted.criteria.{criterion}"
        if not isinstance(row, dict):
            raise UsageError(f"{where}: not an object", where=str(path))
        _check_value(path, f"{where}.win_rate", row.get("win_rate"), 0, 1)
        _check_interval(path, f"{where}.win_rate_ci95", row.get("win_rate_ci95"), 0, 1)
        for name in ("items", "items_without_prob_a"):
            _check_count(path, f"{where}.{name}", row.get(name), optional=True)
    if "personalization" in criteria and "quality" in criteria:
        _check_dpq(path, "metrics.weighted.dpq", weighted.get("dpq"), criteria["personalization"].get("win_rate"),
                   criteria["quality"].get("win_rate"),
                   "metrics.weighted.criteria.personalization.win_rate + metrics.weighted.criteria.quality.win_rate - 1")


# -- comparability -----------------------------------------------------------------------


def comparability_key(results: dict[str, Any]) -> dict[str, Any]:
    return {field: _get(results, field) for field, _ in COMPARABILITY_FIELDS}


def _key_hash(key: dict[str, Any]) -> str:
    return stable_hash({k: (None if v is MISSING else v) for k, v in key.items()}, 16)


def check_comparable(reference: tuple[Path, dict[str, Any]], other: tuple[Path, dict[str, Any]]) -> None:
    """Raise UsageError naming ``other``'s file and the first field where it differs."""
    ref_path, ref = reference
    path, results = other
    for field, label in COMPARABILITY_FIELDS:
        a, b = _get(ref, field), _get(results, field)
        if a != b:
            where, va, vb = _first_difference(a, b, field)
            raise UsageError(
                f"cannot be compared with {ref_path}: {label} differs at field {where!r} "
                f"({_show(vb)} here vs {_show(va)} there); a leaderboard puts only comparable results side by side "
                "(pass --allow-mixed to put them in separate tables)",
                where=str(path),
            )


# -- building ----------------------------------------------------------------------------


def _criterion(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in CRITERION_FIELDS}


def _link(path: Path, base: Path | None) -> str:
    """Where the row links to: relative to the leaderboard file when both are local."""
    if base is None:
        return path.resolve().as_posix()
    try:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()


def _split_result(path: Path, results: dict[str, Any], base: Path | None) -> dict[str, Any]:
    metrics = results["metrics"]
    weighted = metrics.get("weighted") if isinstance(metrics.get("weighted"), dict) else {}
    return {
        "dpq": metrics["dpq"],
        "dpq_ci95": metrics["dpq_ci95"],
        # Results written before the weighted preference existed have none: null, never 0.
        "weighted_dpq": weighted.get("dpq"),
        "weighted_dpq_ci95": weighted.get("dpq_ci95"),
        "items": metrics["items"],
        "personalization": _criterion(metrics["criteria"]["personalization"]),
        "quality": _criterion(metrics["criteria"]["quality"]),
        "results_file": _link(path, base),
        "run_dir": str(results.get("run_dir", path.parent)),
        "run_key": str(results.get("run_key", "")),
    }


def _examples(path: Path, split: str, wanted: int) -> list[dict[str, Any]]:
    """A few personas the run used, read from its generations.jsonl (never modified)."""
    generations = path.parent / "generations.jsonl"
    out: list[dict[str, Any]] = []
    if wanted <= 0 or not generations.is_file():
        return out
    with generations.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line of an interrupted run
            persona = record.get("persona") if isinstance(record, dict) else None
            if record.get("role") == "test" and isinstance(persona, str) and persona.strip():
                out.append({"split": split, "item_id": str(record.get("item_id", "")), "persona": persona[:500]})
                if len(out) >= wanted:
                    break
    return out


def _sort_value(row: dict[str, Any], split: str, by: str = "dpq") -> float | None:
    result = row["splits"].get(split)
    return None if result is None else result.get(by)


def check_sort_by(by: str) -> str:
    if by not in SORT_METRICS:
        raise UsageError(f"cannot sort by {by!r}: choose one of {', '.join(SORT_METRICS)}")
    return by


def sort_rows(rows: Iterable[dict[str, Any]], by: str = "dpq") -> list[dict[str, Any]]:
    """Best rejected-split value of ``by`` first, then best chosen-split value; undefined values last.

    ``by`` is ``dpq`` (the paper's metric) or ``weighted_dpq`` (the probability-weighted one).
    """
    check_sort_by(by)

    def key(row):
        values = []
        for split in SPLIT_ORDER:
            value = _sort_value(row, split, by)
            values += [value is None, -(value or 0.0)]
        return (*values, row["model"], row["strategy"])

    return sorted(rows, key=key)


def _split_rank(split: str) -> tuple[int, str]:
    """Rejected first (the hard benchmark), then chosen, then any other split by name."""
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def _group(members: list[tuple[Path, dict[str, Any]]], base: Path | None, examples: int, sort_by: str) -> dict[str, Any]:
    first_path, first = members[0]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    sources: dict[tuple[str, str, str], Path] = {}
    example_list: list[dict[str, Any]] = []
    example_keys: set[tuple[str, str]] = set()
    for path, results in members:
        model, strategy, split = str(results["model"]), str(results["strategies"]["test"]), str(results["split"])
        if (model, strategy, split) in sources:
            raise UsageError(
                f"a second result for model {model!r}, strategy {strategy!r}, split {split!r} "
                f"(the first is {sources[(model, strategy, split)]}); keep one of them",
                where=str(path),
            )
        sources[(model, strategy, split)] = path
        row = rows.setdefault((model, strategy), {
            "model": model, "strategy": strategy, "identity": results["identities"]["test"], "splits": {}, "gap": None,
        })
        if row["identity"] != results["identities"]["test"]:
            other = next(p for (m, s, _), p in sources.items() if (m, s) == (model, strategy) and p != path)
            where, a, b = _first_difference(row["identity"], results["identities"]["test"], "identities.test")
            raise UsageError(
                f"model {model!r} has another identity than in {other} at field {where!r} ({_show(b)} here vs {_show(a)} there); "
                "give the two models different specs",
                where=str(path),
            )
        row["splits"][split] = _split_result(path, results, base)
        for example in _examples(path, split, examples):
            if (example["split"], example["item_id"]) not in example_keys and sum(e["split"] == split for e in example_list) < examples:
                example_keys.add((example["split"], example["item_id"]))
                example_list.append(example)
    for row in rows.values():
        # The gap is the paper's (rejected dPQ - chosen dPQ) whatever the rows are sorted by.
        chosen, rejected = _sort_value(row, "chosen"), _sort_value(row, "rejected")
        row["gap"] = None if chosen is None or rejected is None else rejected - chosen
        row["splits"] = {s: row["splits"][s] for s in sorted(row["splits"], key=_split_rank)}
    task = first["task"]
    identity = first["persona_source"]["identity"]
    retriever = identity.get("retriever") if isinstance(identity, dict) else None
    group = {
        "key": _key_hash(comparability_key(first)),
        "task": {"name": str(task["name"]), "version": task["version"], "hash": task["hash"], "data_hash": task.get("data_hash")},
        "judges": {"names": list(first["judges"]), "model": str(first["judge_model"]), "identity": first["identities"]["judges"]},
        "baseline": {"model": str(first["baseline"]), "strategy": str(first["strategies"]["baseline"]), "identity": first["identities"]["baseline"]},
        "persona_source": {
            "name": str(first["persona_source"]["name"]),
            "options": first["persona_source"].get("options") or {},
            "identity": identity,
            "retriever": retriever if isinstance(retriever, dict) else None,
        },
        "rows": sort_rows(rows.values(), sort_by),
    }
    if example_list:
        group["examples"] = sorted(example_list, key=lambda e: _split_rank(e["split"]))
    return group


def _generated() -> str:
    # SOURCE_DATE_EPOCH makes a rebuilt demo leaderboard byte-identical.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch) if epoch and epoch.isdigit() else None))


def build_leaderboard(
    inputs: Sequence[str | os.PathLike],
    *,
    allow_mixed: bool = False,
    base: str | os.PathLike | None = None,
    examples: int = 2,
    title: str | None = None,
    sort_by: str = "dpq",
) -> dict[str, Any]:
    """Read, check and group results into a validated leaderboard document.

    ``base`` is the folder of the leaderboard file: row links are made relative to it.
    ``sort_by`` (``dpq`` or ``weighted_dpq``) orders the rows and is recorded in the document.
    """
    check_sort_by(sort_by)
    paths = results_files(inputs)
    if not paths:
        raise UsageError("no results given")
    loaded = [(path, read_results(path)) for path in paths]
    groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, results in loaded:
        key = _key_hash(comparability_key(results))
        if not allow_mixed and groups and key not in groups:
            check_comparable(loaded[0], (path, results))
        groups.setdefault(key, []).append((path, results))
    base_path = Path(base) if base is not None else None
    doc: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "generated": _generated(),
        "persona_eval_version": __version__,
        "mixed": allow_mixed,
        "sort_by": sort_by,
    }
    if title:
        doc["title"] = title
    doc["groups"] = [_group(members, base_path, examples, sort_by) for members in groups.values()]
    validate(doc, where="the built leaderboard")
    return doc


def write_leaderboard(doc: dict[str, Any], output: str | os.PathLike) -> Path:
    output = Path(output)
    if output.is_dir():
        raise UsageError("is a directory; give a file name such as leaderboard.json", where=str(output))
    validate(doc, where=str(output))
    try:
        atomic_write_json(output, doc)
    except OSError as exc:
        raise UsageError(f"cannot write the leaderboard: {exc.strerror or exc}", where=str(output)) from exc
    return output
