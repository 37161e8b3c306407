"""Test helpers for the leaderboard tests: run directories shaped like the runner's.

``make_run`` writes a ``results.json`` with the keys and nesting `Run.results` writes
(task, split, model, baseline, strategies, persona source, judges, identities, metrics
with per-criterion counts and intervals) and a ``generations.jsonl`` with personas, so
the builder reads exactly what it reads from a real run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

MODEL_IDENTITY = {"backend": "hf", "model": "embedded/SmolLM2-135M-Instruct", "revision": "sha256:aec42c2a17481961",
                  "adapter": None, "dtype": "auto", "chat_template": True}
JUDGE_IDENTITY = {"judge": "prometheus", "model": MODEL_IDENTITY, "template": "bdc5f629ffd7eaf4",
                  "params": {"max_new_tokens": 256, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": []},
                  "max_attempts": 2, "logprobs": True, "feedback": False}


# Decided pairs behind each win rate: the counts must give the rate exactly (the builder
# checks win_rate == test_wins / (test_wins + baseline_wins)), and dPQ values with one decimal
# give win rates with up to four.
DECIDED = 10_000


def _criterion(win_rate: float | None, ties: int = 1) -> dict[str, Any]:
    ci = None if win_rate is None else [max(0.0, win_rate - 0.2), min(1.0, win_rate + 0.15)]
    wins = 0 if win_rate is None else round(win_rate * DECIDED)
    losses = 0 if win_rate is None else DECIDED - wins
    return {"test_wins": wins, "baseline_wins": losses, "ties": ties, "unscored": 0,
            "win_rate": None if win_rate is None else wins / DECIDED, "tie_rate": 0.1, "win_rate_ci95": ci}


def results_dict(
    *, split: str = "rejected", model: str = "hf:embedded", strategy: str = "pt", dpq: float | None = 10.0,
    p: float | None = None, task_name: str = "demo", run_dir: str = "runs/x",
) -> dict[str, Any]:
    """A results.json document; p and q are chosen so that 100 * (p + q - 1) == dpq."""
    if dpq is None:
        p_win = q_win = None
        ci = None
    else:
        p_win = p if p is not None else 0.5 + dpq / 200.0
        q_win = 1.0 + dpq / 100.0 - p_win
        ci = [dpq - 12.0, dpq + 9.0]
    identity = dict(MODEL_IDENTITY, model=model.split(":", 1)[-1]) if model != "hf:embedded" else dict(MODEL_IDENTITY)
    metrics = {
        "dpq": dpq, "dpq_ci95": ci, "items": 16,
        "criteria": {"personalization": _criterion(p_win), "quality": _criterion(q_win)},
        "judge_health": {"verdicts": 64, "unscored_verdicts": 0, "tie_rate": 0.1},
        "bootstrap": {"resamples": 1000, "seed": 0, "confidence": 0.95},
    }
    return {
        "schema": "persona-eval/results@1",
        "persona_eval_version": "0.1.0",
        "run_dir": run_dir,
        "run_key": "66e0162102b8",
        "task": {"name": task_name, "version": 1, "hash": "aac5607cc31a479d", "data_hash": "fd81ca1371e0596d",
                 "path": "tasks/demo/demo.yaml"},
        "split": split,
        "model": model,
        "baseline": "hf:embedded",
        "strategies": {"test": strategy, "baseline": "baseline"},
        "persona_source": {"name": "gold", "options": {}, "identity": {"source": "gold"}},
        "judges": ["prometheus"],
        "judge_model": "hf:embedded",
        "identities": {"test": identity, "baseline": dict(MODEL_IDENTITY), "judges": {"prometheus": copy.deepcopy(JUDGE_IDENTITY)}},
        "config": {},
        "versions": {"persona-eval": "0.1.0"},
        "metrics": metrics,
        "per_judge": {"prometheus": metrics},
        "seconds": 1.0,
    }


def make_run(root: Path, name: str, personas: tuple[str, ...] = ("The user is a home cook.", "The user is a planner."),
             **kwargs) -> Path:
    """A run directory ``root/name`` holding results.json and generations.jsonl; returns it."""
    run = root / name
    run.mkdir(parents=True)
    results = kwargs.pop("results", None) or results_dict(run_dir=str(run), **kwargs)
    (run / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    with (run / "generations.jsonl").open("w", encoding="utf-8") as handle:
        for i, persona in enumerate(personas):
            for role in ("test", "baseline"):
                handle.write(json.dumps({"item_id": f"demo-test-{i:03d}", "role": role, "persona": persona, "response": "..."}) + "\n")
    return run


def edit_results(run: Path, edit) -> None:
    """Apply ``edit(results_dict)`` to a run's results.json in place."""
    path = run / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    edit(results)
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
