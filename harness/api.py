"""The Python entry points: `evaluate` runs the pipeline, `load_run` reads a finished run back.

    import persona_eval
    results = persona_eval.evaluate(task="demo", model="hf:embedded", split="rejected", limit=4)
    print(results["metrics"]["dpq"])
    run = persona_eval.load_run(results["run_dir"])
    run.to_pandas()          # one row per item: prompt, persona, both responses, outcomes

`evaluate` is what `persona-eval run` executes (the command only turns flags into these
arguments), so a notebook and the command line share run keys, run directories, the cache
and results byte for byte. Both names are importable from `persona_eval` without loading
torch: this module imports the pipeline only when called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence


def evaluate(
    task: str | None = None,
    model: str | None = None,
    baseline: str | None = None,
    split: str = "rejected",
    judge: str | Sequence[str] | None = None,
    judge_model: str | None = None,
    judge_options: Mapping[str, Any] | None = None,
    strategy: str | None = None,
    baseline_strategy: str | None = None,
    persona_source: str | None = None,
    persona_source_options: Mapping[str, Any] | None = None,
    limit: int | None = None,
    seed: int = 0,
    output_dir: str | Path | None = None,
    runs_root: str | Path = "runs",
    include_paths: Sequence[str] = (),
    data_dir: str | Path | None = None,
    use_cache: bool = True,
    cache_path: str | None = None,
    bootstrap: int = 1000,
    progress: bool = False,
    keep_models: bool = False,
    executor: str = "local",
    prices: Sequence[str] = (),
    dry_run: bool = False,
) -> dict[str, Any]:
    """Run one evaluation (personas, generation, judging, scoring) and return its ``results.json`` document.

    Arguments mirror `persona-eval run`'s options: specs are strings such as
    ``"hf:embedded"`` or ``"openai:gpt-4o,base_url=..."``; `judge` is one judge name (or
    ``NAME@SPEC``) or a list of them for a majority vote; ``None`` means the task's default.
    Rerunning with the same arguments resumes the same run directory. Models loaded for the
    run are released at the end unless `keep_models` is true (then a later call with the
    same specs reuses them). `executor` is ``"local"`` or ``"ray[,address=...,replicas=N,...]"``
    (where cache misses are computed; see docs/scale.md): it never changes results or run keys.
    `prices` are ``MODEL=IN_PER_1M:OUT_PER_1M`` strings (``--price``), over the file named by
    ``$PERSONA_EVAL_PRICES``: they add costs to the ``usage`` block and never change the run.
    With `dry_run` nothing runs and nothing is written: the result is the plan
    (`pipeline.plan.plan_run`): calls per stage, what the cache and the run directory already
    hold, estimated tokens, and the cost where priced.
    """
    from persona_eval.limits import check_number

    # The bounds `persona-eval run` checks (limits.NUMERIC), checked here before anything loads.
    check_number("bootstrap", bootstrap, option="bootstrap")
    check_number("limit", limit, option="limit")
    check_number("seed", seed, option="seed")

    from persona_eval.contracts.factories import close_generators
    from persona_eval.pipeline.run import Run, RunOptions

    judges = (judge,) if isinstance(judge, str) else tuple(judge or ())
    options = RunOptions(
        task=task, split=split, model=model, baseline=baseline, strategy=strategy, baseline_strategy=baseline_strategy,
        judges=judges, judge_model=judge_model, judge_options=dict(judge_options or {}),
        persona_source=persona_source, persona_source_options=dict(persona_source_options or {}),
        limit=limit, seed=seed, output_dir=None if output_dir is None else str(output_dir), runs_root=str(runs_root),
        include_paths=tuple(include_paths), use_cache=use_cache, cache_path=cache_path, bootstrap=bootstrap,
        data_dir=None if data_dir is None else str(data_dir), executor=executor, prices=tuple(prices),
    )
    if dry_run:
        from persona_eval.pipeline.plan import plan_run

        try:
            return plan_run(options)
        finally:
            if not keep_models:
                close_generators()
    try:
        return Run(options, progress=progress).execute()
    finally:
        if not keep_models:
            close_generators()


def rejudge(run_dir: str | Path, *, dry_run: bool = False, **options: Any) -> dict[str, Any]:
    """Judge a finished run again (`persona-eval judge RUN_DIR`); see `pipeline.run.rejudge` for the options.

    With `dry_run` the result is the plan (`pipeline.plan.plan_rejudge`), and nothing is written.
    """
    from persona_eval.limits import check_number

    check_number("bootstrap", options.get("resamples"), option="resamples")

    from persona_eval.contracts.factories import close_generators
    from persona_eval.pipeline.run import rejudge as rejudge_run

    try:
        if dry_run:
            from persona_eval.pipeline.plan import plan_rejudge

            # Where the work would run and how progress would show change no count.
            planned = {k: v for k, v in options.items() if k not in ("progress", "executor")}
            return plan_rejudge(run_dir, **planned)
        return rejudge_run(run_dir, **options)
    finally:
        close_generators()


@dataclass
class RunRecords:
    """A finished (or interrupted) run directory, read back: config, records and results."""

    run_dir: Path
    config: dict[str, Any]
    generations: list[dict[str, Any]]
    judgments: list[dict[str, Any]]
    results: dict[str, Any] | None
    # Re-judgings of this run (`persona-eval judge RUN_DIR`), by folder name.
    rejudgings: dict[str, "RunRecords"] = field(default_factory=dict)

    def outcomes(self) -> dict[str, dict[str, dict[str, str]]]:
        """judge label -> item id -> criterion -> ``test``/``baseline``/``tie``/``unscored``."""
        from persona_eval.scoring.metrics import item_outcomes

        by_label: dict[str, list[dict[str, Any]]] = {}
        for record in self.judgments:
            by_label.setdefault(record.get("judge", ""), []).append(record)
        return {label: item_outcomes(records) for label, records in by_label.items()}

    def items(self) -> list[dict[str, Any]]:
        """One flat row per item: ids, prompt, persona, both responses and every judge's outcome per criterion."""
        rows: dict[str, dict[str, Any]] = {}
        for record in self.generations:
            row = rows.setdefault(str(record["item_id"]), {"item_id": str(record["item_id"])})
            role = record.get("role")
            row.setdefault("prompt", record.get("prompt"))
            if role == "test":
                row["persona"] = record.get("persona")
                row["persona_source"] = record.get("persona_source")
            row[f"{role}_model"] = record.get("model")
            row[f"{role}_response"] = record.get("response")
        several = len({r.get("judge") for r in self.judgments}) > 1
        for label, outcomes in self.outcomes().items():
            for item_id, by_criterion in outcomes.items():
                for criterion, outcome in by_criterion.items():
                    column = f"{label}:{criterion}" if several else criterion
                    rows.setdefault(item_id, {"item_id": item_id})[column] = outcome
        return list(rows.values())

    def to_pandas(self):
        """`items` as a pandas DataFrame (pandas is not a dependency: install it to use this)."""
        try:
            import pandas as pd
        except ImportError as exc:
            from persona_eval.errors import UsageError

            raise UsageError("to_pandas() needs pandas: pip install pandas") from exc
        return pd.DataFrame(self.items())


def load_run(run_dir: str | Path) -> RunRecords:
    """Read a run directory (or a ``judge-*`` folder inside one) back: config, records and results."""
    from persona_eval.errors import UsageError
    from persona_eval.storage.jsonl import GENERATION_KEY, JUDGMENT_KEY, read_keyed

    folder = Path(run_dir)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UsageError("not a run directory (no config.json)", where=str(folder))
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        results_path = folder / "results.json"
        results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else None
    except (OSError, ValueError) as exc:
        raise UsageError(f"unreadable run file: {exc}", where=str(folder)) from exc
    generations_path, judgments_path = folder / "generations.jsonl", folder / "judgments.jsonl"
    # A judge-* folder holds no generations of its own: they are its parent run's.
    if not generations_path.exists() and (folder.parent / "generations.jsonl").exists() and "rejudge_of" in config:
        generations_path = folder.parent / "generations.jsonl"
    # A run still going (or killed) may end in a torn line: read past it, write nothing.
    # Two different records for one key are an error naming the line; identical ones count once.
    generations = list(read_keyed(generations_path, GENERATION_KEY, what="generation", skip_torn_tail=True).values())
    judgments = list(read_keyed(judgments_path, JUDGMENT_KEY, required=("item_id", "criterion", "order"),
                                what="judgment", skip_torn_tail=True).values())
    records = RunRecords(folder, config, generations, judgments, results)
    for sub in sorted(folder.glob("judge-*/config.json")):
        records.rejudgings[sub.parent.name] = load_run(sub.parent)
    return records
