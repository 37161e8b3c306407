"""The checked-in leaderboards/demo.json still describes the demo task as it is now.

It is built from real runs (`bash leaderboards/build_demo.sh`); when the demo task, its
data or the demo judge's prompt changes, this fails until it is rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path

import judging_support as js

from persona_eval.contracts.factories import build_judge
from persona_eval.taskfile.loading import resolve_task

DEMO = Path(__file__).resolve().parents[1] / "leaderboards" / "demo.json"
REBUILD = "leaderboards/demo.json is stale: rebuild it with `bash leaderboards/build_demo.sh`"


def test_demo_leaderboard_matches_the_demo_task():
    board = json.loads(DEMO.read_text())
    task = resolve_task("demo", [])
    assert board["groups"], "the demo leaderboard has no groups"
    for group in board["groups"]:
        assert group["task"]["name"] == "demo"
        assert (group["task"]["hash"], group["task"]["data_hash"]) == (task.task_hash, task.data_hash), REBUILD


def test_demo_leaderboard_judge_prompt_is_current():
    plugin = js.install()
    try:
        task = resolve_task("demo", [])
        judge = build_judge(task.spec.judge.name, "scripted:first", task, seed=0)
        current = judge.identity()
    finally:
        js.uninstall(plugin)
    board = json.loads(DEMO.read_text())
    for group in board["groups"]:
        recorded = group["judges"]["identity"][task.spec.judge.name]
        for field in ("template", "params", "max_attempts", "feedback"):
            assert recorded[field] == current[field], f"{REBUILD} (judge {field} differs)"
