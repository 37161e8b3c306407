"""Reading a finished run directory back: its config, its task as resolved then, its items and responses.

`persona-eval judge RUN_DIR` enters the pipeline at the judge stage with what this reads,
and `persona_eval.load_run` gives it to notebooks. The task comes from the copy resolved
into ``config.json``, so later edits of the task YAML never change what is re-judged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from persona_eval.errors import UsageError
from persona_eval.pipeline.items import ROLES, JudgeItem
from persona_eval.storage.jsonl import GENERATION_KEY, read_keyed


def read_run_dir(run_dir: Path) -> tuple[dict[str, Any], Any, list[JudgeItem], dict[tuple[str, str], str]]:
    """(config, task as resolved for the run, judge items, responses by (item id, role)) of a finished run."""
    from pydantic import ValidationError

    from persona_eval.taskfile.loading import Task
    from persona_eval.taskfile.schema import TaskSpec

    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise UsageError("not a run directory (no config.json); run `persona-eval run` first", where=str(run_dir))
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        resolved = config["task"]["resolved"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"unreadable run config ({type(exc).__name__}: {exc})", where=str(config_path)) from exc
    try:
        spec = TaskSpec.model_validate(resolved)
    except ValidationError as exc:
        raise UsageError(f"the task recorded in the run no longer validates: {exc.errors()[0]['msg']}", where=str(config_path)) from exc
    # The task as it was resolved for the run: later edits of the YAML do not change what is re-judged.
    task = Task(spec=spec, path=Path(config["task"].get("path") or run_dir / "task.yaml"), raw=resolved)

    generations_path = run_dir / "generations.jsonl"
    # Two different records for one (item, role) are an error naming the line; identical ones count once.
    records = read_keyed(generations_path, GENERATION_KEY, what="generation")
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    order: list[str] = []
    for record in records.values():
        item_id, role = str(record["item_id"]), record["role"]
        if "response" not in record:
            raise UsageError(f"generation record for item {item_id!r} ({role}) lacks 'response'", where=str(generations_path))
        if role not in ROLES:
            continue
        if item_id not in order:
            order.append(item_id)
        by_key[(item_id, role)] = record
    if not order:
        raise UsageError("no generations to judge", where=str(generations_path))
    missing = [f"{i} ({role})" for i in order for role in ROLES if (i, role) not in by_key]
    if missing:
        raise UsageError(
            f"generation incomplete: no response for item {missing[0]}"
            f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; rerun `persona-eval run` to finish it",
            where=str(generations_path),
        )
    expected = config.get("items")
    if isinstance(expected, int) and expected != len(order):
        raise UsageError(
            f"generation incomplete: {len(order)} of {expected} items; rerun `persona-eval run` to finish it",
            where=str(generations_path),
        )
    prompts: dict[str, str] = {}
    if any("prompt" not in by_key[(i, "test")] for i in order):
        recorded = config["task"].get("data_hash")
        if recorded and task.data_hash != recorded:
            raise UsageError(
                "the task's test data changed since this run (data hash differs) and the run's records "
                "do not carry the prompts; rerun `persona-eval run`", where=str(task.path),
            )
        prompts = {e.id: e.prompt for e in task.load("test")}
    items = []
    for item_id in order:
        test = by_key[(item_id, "test")]
        prompt = test.get("prompt", prompts.get(item_id))
        if prompt is None:
            raise UsageError(f"item {item_id!r} is not in the task's test data", where=str(generations_path))
        items.append(JudgeItem(id=item_id, prompt=prompt, persona=test.get("persona", "")))
    responses = {key: record["response"] for key, record in by_key.items()}
    return config, task, items, responses
