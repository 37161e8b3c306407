"""One real `persona-eval run --limit 2` on the embedded model through the CLI, then a cached rerun.

The default run: the demo task, the embedded SmolLM2-135M for test model, baseline and the
Prometheus judge. The rerun goes to a second run directory with the same result cache, so
every generation and every verdict must come from the cache and the metrics must match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_ENV = ("PERSONA_EVAL_LOAD_PLUGINS", "PERSONA_EVAL_STRICT_PLUGINS")

pytestmark = pytest.mark.slow


def run_cli(output_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    env.update({"COLUMNS": "200", "NO_COLOR": "1"})
    # One intra-op thread: on a shared 2-core box two spinning OpenMP threads run ~10x slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "persona_eval.cli", "run", "--limit", "2", "--output-dir", str(output_dir), "--quiet"],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=840,
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, embedded_model_dir):
    root = tmp_path_factory.mktemp("e2e")
    first = run_cli(root / "first", root)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(root / "second", root)
    assert second.returncode == 0, second.stderr[-3000:]
    return root, first, second


def test_first_run_prints_the_results_table(two_runs):
    _, first, _ = two_runs
    for text in ("personalization", "quality", "dPQ", "unscored"):
        assert text in first.stdout, first.stdout
    assert "Traceback" not in first.stderr


def test_run_directory_contents(two_runs):
    root, _, _ = two_runs
    run_dir = root / "first"
    assert {"config.json", "generations.jsonl", "judgments.jsonl", "results.json"} <= {p.name for p in run_dir.iterdir()}

    generations = read_jsonl(run_dir / "generations.jsonl")
    assert len(generations) == 4
    assert sorted((g["item_id"], g["role"]) for g in generations) == sorted(
        (item, role) for item in {g["item_id"] for g in generations} for role in ("test", "baseline")
    )
    for g in generations:
        assert g["persona_source"] == "gold" and g["persona"].startswith("The user is")
        assert g["strategy"] == ("pt" if g["role"] == "test" else "baseline")
        assert ("Persona:" in g["input"]) == (g["role"] == "test")
        assert isinstance(g["response"], str)

    judgments = read_jsonl(run_dir / "judgments.jsonl")
    assert len(judgments) == 8  # 2 items x 2 criteria x 2 orders
    keys = {(j["item_id"], j["criterion"], j["order"]) for j in judgments}
    assert len(keys) == 8
    assert {j["criterion"] for j in judgments} == {"personalization", "quality"}
    assert {j["order"] for j in judgments} == {"baseline_first", "test_first"}
    for j in judgments:
        assert j["judge"] == "prometheus"
        assert j["winner"] in ("A", "B", None)
        if j["winner"] is None:
            assert j["unscored_reason"]
        elif j["prob_a"] is not None:
            assert (j["prob_a"] > 0.5) == (j["winner"] == "A") or "[RESULT]" in j["raw"]

    config = json.loads((run_dir / "config.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert config["limit"] == 2 and config["items"] == 2 and config["split"] == "rejected"
    assert results["config"] == config


def test_results_carry_provenance(two_runs):
    root, _, _ = two_runs
    results = json.loads((root / "first" / "results.json").read_text())
    config = results["config"]
    # The resolved config: the task as resolved, with its hashes.
    assert results["task"]["name"] == "demo"
    assert len(results["task"]["hash"]) == 16 and len(results["task"]["data_hash"]) == 16
    assert config["task"]["resolved"]["dataset"]["test"] == "data/test.jsonl"
    assert config["task"]["resolved"]["generation"]["max_new_tokens"] > 0
    assert config["model"] == config["baseline"] == config["judge_model"] == "hf:embedded"
    assert config["seed"] == 0
    # Package versions.
    from importlib.metadata import version

    assert results["versions"]["persona-eval"] == version("persona-eval")
    assert results["versions"]["torch"] == version("torch")
    assert results["versions"]["transformers"] == version("transformers")
    # Generator and judge identities.
    identities = results["identities"]
    for role in ("test", "baseline"):
        assert identities[role]["backend"] == "hf"
        assert identities[role]["model"] == "embedded/SmolLM2-135M-Instruct"
        assert identities[role]["revision"].startswith("sha256:")
    judge = identities["judges"]["prometheus"]
    assert judge["judge"] == "prometheus" and judge["model"]["backend"] == "hf" and judge["template"]
    # The headline metrics are well-formed.
    metrics = results["metrics"]
    assert metrics["items"] == 2
    for criterion in ("personalization", "quality"):
        row = metrics["criteria"][criterion]
        assert row["test_wins"] + row["baseline_wins"] + row["ties"] + row["unscored"] == 2
    if metrics["dpq"] is not None:
        assert -100.0 <= metrics["dpq"] <= 100.0


def test_second_identical_run_is_fully_cached(two_runs):
    root, first, second = two_runs
    for name, expected in (("generations.jsonl", 4), ("judgments.jsonl", 8)):
        records = read_jsonl(root / "second" / name)
        assert len(records) == expected
        assert all(r["cached"] is True for r in records), [r["cached"] for r in records]
    one = json.loads((root / "first" / "results.json").read_text())
    two = json.loads((root / "second" / "results.json").read_text())
    assert two["run_key"] == one["run_key"]
    assert two["metrics"] == one["metrics"]
    assert two["identities"] == one["identities"]
    strip = lambda recs: sorted((json.dumps({k: v for k, v in r.items() if k != "cached"}, sort_keys=True) for r in recs))
    for name in ("generations.jsonl", "judgments.jsonl"):
        assert strip(read_jsonl(root / "second" / name)) == strip(read_jsonl(root / "first" / name))
    assert "dPQ" in second.stdout
