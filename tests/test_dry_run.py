"""`--dry-run` of `run`, `judge RUN_DIR` and `infer`: the plan, its counts against the real run, and nothing written.

The plan's call counts are checked against what the real run then does: the records it writes
without the cache (``cached: false`` in generations.jsonl and judgments.jsonl), the calls a
counting backend receives, and the requests summed into each verdict's usage. A dry run lists
every file under the run's folder and the cache folder before and after: nothing may appear or
change. The real runs use the embedded model on the demo task with 4-token answers (`--limit 2`),
the scripted test backend (`judging_support`) and the paper's released outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_eval.api import evaluate, rejudge
from persona_eval.cli import _add_plugin_commands, cli

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "tasks" / "demo"
SHARED_DATA = REPO.parent / "shared" / "data" / "paper-outputs"


def _tiny_task(folder: Path) -> Path:
    """The demo task with 4-token answers and verdicts."""
    text = (DEMO / "demo.yaml").read_text(encoding="utf-8")
    for old, new in (("name: demo", "name: dry-demo"), ("data/test.jsonl", str(DEMO / "data" / "test.jsonl")),
                     ("data/train.jsonl", str(DEMO / "data" / "train.jsonl")),
                     ("max_new_tokens: 64", "max_new_tokens: 4"), ("max_new_tokens: 256", "max_new_tokens: 4")):
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "dry-demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file under the folders (symlinked folders not followed), with its size and modification time."""
    seen = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = Path(root, name)
                stat = path.lstat()
                seen[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return seen


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _new_records(path: Path, **match) -> int:
    return sum(1 for r in _read(path) if not r["cached"] and all(r.get(k) == v for k, v in match.items()))


def _rows(plan: dict) -> dict[str, dict]:
    return {f"{row['stage']} {row['label']}": row for row in plan["rows"]}


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    """A fresh cache folder for the command line (the session's models linked in)."""
    folder = tmp_path / "cache-home"
    folder.mkdir()
    (folder / "models").symlink_to(Path(os.environ["PERSONA_EVAL_CACHE"]) / "models", target_is_directory=True)
    monkeypatch.setenv("PERSONA_EVAL_CACHE", str(folder))
    return folder


def _cli(*args: str):
    _add_plugin_commands()
    return CliRunner().invoke(cli, list(args))


# ---- the demo task on the embedded model ---------------------------------------------------------


@pytest.mark.slow
def test_dry_run_counts_equal_what_the_real_run_does(tmp_path, cache_folder, embedded_model_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    task = _tiny_task(tmp_path)
    common = ["--task", str(task), "--limit", "2", "--bootstrap", "10", "--quiet"]
    before = _snapshot(tmp_path)
    result = _cli("run", *common, "--output-dir", str(tmp_path / "run1"), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert _snapshot(tmp_path) == before and not (tmp_path / "run1").exists()
    rows = _rows(plan)
    assert plan["items"] == 2 and plan["cache"] == {"used": True, "path": str(cache_folder / "results.sqlite"), "exists": False}
    assert [(r["new"], r["cached"], r["resumed"]) for r in rows.values()] == [(2, 0, 0), (2, 0, 0), (8, 0, 0)]
    judge = rows["judge prometheus"]
    assert judge["criteria"] == {c: {"calls": 4, "new": 4, "cached": 0, "resumed": 0} for c in ("personalization", "quality")}
    assert rows["generate test (pt)"]["input_source"] == "tokenizer" and rows["generate test (pt)"]["output_tokens"] == 8
    assert "cost" not in plan["total"]

    # The real run: exactly the planned calls are made, and the tokenizer counted the same input tokens.
    result = _cli("run", *common, "--output-dir", str(tmp_path / "run1"), "--json", "--price", "hf:embedded=1:2")
    assert result.exit_code == 0, result.output
    results = json.loads(result.output)
    generations, judgments = tmp_path / "run1" / "generations.jsonl", tmp_path / "run1" / "judgments.jsonl"
    for role, label in (("test", "generate test (pt)"), ("baseline", "generate baseline (baseline)")):
        assert _new_records(generations, role=role) == rows[label]["new"]
    assert _new_records(judgments) == judge["new"]
    assert sum(r["usage"]["requests"] for r in _read(judgments)) == judge["new"] * judge["requests_per_call"]
    usage = results["usage"]
    assert usage["generate"]["hf:embedded"]["input_tokens"] == sum(rows[k]["input_tokens"] for k in rows if k.startswith("generate"))
    assert usage["generate"]["hf:embedded"]["output_tokens"] <= 8 + 8
    # Responses not generated yet were counted at max_new_tokens each: close, though re-tokenized text may differ a little.
    assert usage["judge"]["hf:embedded"]["input_tokens"] == pytest.approx(judge["input_tokens"], rel=0.1)
    assert usage["total"]["cost"] == pytest.approx((usage["total"]["input_tokens"] + 2 * usage["total"]["output_tokens"]) / 1e6)
    for record in _read(generations):
        assert record["usage_source"] == "tokenizer" and record["input_tokens"] > 0
    for record in _read(judgments):
        assert record["usage"]["source"] == "tokenizer" and record["usage"]["requests"] == 1

    # Resuming the same directory: everything is in it.
    plan = evaluate(task=str(task), limit=2, bootstrap=10, output_dir=tmp_path / "run1", dry_run=True)
    assert [(r["new"], r["cached"], r["resumed"]) for r in plan["rows"]] == [(0, 0, 2), (0, 0, 2), (0, 0, 8)]
    # A fresh directory over the same cache: everything is cached, and the real run computes nothing.
    before = _snapshot(tmp_path)
    result = _cli("run", *common, "--output-dir", str(tmp_path / "run2"), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert _snapshot(tmp_path) == before and not (tmp_path / "run2").exists()
    plan = json.loads(result.output)
    assert [(r["new"], r["cached"]) for r in plan["rows"]] == [(0, 2), (0, 2), (0, 8)] and plan["total"]["new"] == 0
    result = _cli("run", *common, "--output-dir", str(tmp_path / "run2"), "--json")
    assert result.exit_code == 0, result.output
    assert _new_records(tmp_path / "run2" / "generations.jsonl") == 0 and _new_records(tmp_path / "run2" / "judgments.jsonl") == 0
    assert json.loads(result.output)["usage"]["total"]["requests"] == 0

    # The human-readable plan.
    result = _cli("run", *common, "--output-dir", str(tmp_path / "run3"), "--dry-run", "--price", "hf:embedded=1:2")
    assert result.exit_code == 0, result.output
    assert "nothing was generated, judged or written" in result.output and "cost" in result.output
    assert "generate test (pt) on hf:embedded: 2 calls: 0 new, 2 cached" in " ".join(result.output.split())


def test_a_dry_run_on_a_fresh_machine_leaves_the_embedded_model_unprepared(tmp_path, monkeypatch, embedded_model_dir,
                                                                          cache_folder):
    """No converted copy yet: the plan converts nothing, loads no library, writes nothing, and says what it skipped."""
    from cli_support import imported_after

    prepared = str(cache_folder)  # an empty result cache beside the prepared model: nothing of the session's is cached
    home = tmp_path / "fresh-home"
    home.mkdir()
    monkeypatch.setenv("PERSONA_EVAL_CACHE", str(home))
    completed, heavy = imported_after(["run", "--dry-run", "--json", "--limit", "2", "--output-dir", str(tmp_path / "run")])
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert list(home.iterdir()) == [] and not (tmp_path / "run").exists()  # no models/ folder, no cache, no run
    assert heavy == []  # the conversion would have loaded torch and transformers
    plan = json.loads(completed.stdout)
    assert [row["input_source"] for row in plan["rows"]] == ["estimated"] * 3
    assert [(row["new"], row["cached"]) for row in plan["rows"]] == [(2, 0), (2, 0), (8, 0)]
    assert any(note.startswith("the embedded model (SmolLM2-135M-Instruct) is not prepared on this machine yet")
               for note in plan["notes"]), plan["notes"]
    # The same run key (and so run directory) as on a prepared machine: run keys name models, not their hashes.
    monkeypatch.setenv("PERSONA_EVAL_CACHE", prepared)
    result = _cli("run", "--dry-run", "--json", "--limit", "2", "--output-dir", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    on_prepared = json.loads(result.output)
    assert on_prepared["run_key"] == plan["run_key"] and on_prepared["rows"][0]["input_source"] == "tokenizer"
    assert not any("not prepared" in note for note in on_prepared["notes"])


# ---- counted by a scripted backend: judge RUN_DIR, and the paper's outputs ---------------------------


def test_judge_dry_run_against_the_rejudging(tmp_path, scripted):
    cache = str(tmp_path / "results.sqlite")
    evaluate(task=str(_tiny_task(tmp_path)), model="scripted:writer", judge_model="scripted:longer", limit=3, bootstrap=10,
             output_dir=tmp_path / "run", cache_path=cache)
    scripted.reset()
    before = _snapshot(tmp_path)
    plan = rejudge(tmp_path / "run", judges=("gpt-4o",), judge_model="scripted:longer,probs=true", cache_path=cache,
                   resamples=10, dry_run=True, prices=("scripted:longer,probs=true=3:15",))
    assert _snapshot(tmp_path) == before and scripted.calls == []
    (row,) = plan["rows"]
    assert (row["calls"], row["new"], row["cached"], row["requests_per_call"]) == (12, 12, 0, 2)
    assert plan["total"]["cost"] == pytest.approx((3 * row["input_tokens"] + 15 * row["output_tokens"]) / 1e6)
    results = rejudge(tmp_path / "run", judges=("gpt-4o",), judge_model="scripted:longer,probs=true", cache_path=cache,
                      resamples=10, prices=("scripted:longer,probs=true=3:15",))
    assert len(scripted.judge_calls()) == row["new"]
    judgments = Path(results["run_dir"]) / "judgments.jsonl"
    assert _new_records(judgments) == row["new"]
    assert sum(r["usage"]["requests"] for r in _read(judgments)) == row["new"] * row["requests_per_call"]
    block = results["usage"]["judge"]["scripted:longer,probs=true"]
    assert block["requests"] == 24 and block["cost"] > 0 and results["usage"]["total"]["cost"] == block["cost"]
    # Judged again: all in the judge folder now.
    plan = rejudge(tmp_path / "run", judges=("gpt-4o",), judge_model="scripted:longer,probs=true", cache_path=cache,
                   resamples=10, dry_run=True)
    assert [(r["new"], r["resumed"]) for r in plan["rows"]] == [(0, 12)]


def test_dry_run_over_the_imported_paper_outputs(tmp_path, scripted):
    if not SHARED_DATA.exists():
        pytest.skip(f"shared paper outputs not found at {SHARED_DATA}")
    result = _cli("import-outputs", str(SHARED_DATA), "--format", "paper", "-o", str(tmp_path / "imported"))
    assert result.exit_code == 0, result.output
    folder = SHARED_DATA / "beavertails"
    options = dict(task=str(tmp_path / "imported" / "pe_paper_beavertails.yaml"), split="rejected", persona_source="gold",
                   model=f"file:{folder / 'pt_dpo__gold-rejected.json'}", strategy="pt",
                   baseline=f"file:{folder / 'dpo__gold-rejected.json'}", baseline_strategy="inline",
                   judge_model="scripted:longer,probs=true", bootstrap=10, output_dir=tmp_path / "run",
                   cache_path=str(tmp_path / "results.sqlite"))
    before = _snapshot(tmp_path)
    plan = evaluate(**options, limit=0, dry_run=True)  # all 499 items
    assert _snapshot(tmp_path) == before and scripted.calls == []
    rows = _rows(plan)
    assert plan["items"] == 499 and rows["judge prometheus"]["calls"] == 4 * 499
    # The file backends answered: the judge plan saw the real responses, and no price is missing for them.
    assert rows["generate test (pt)"]["output_source"] == "estimated from the file's responses"
    plan = evaluate(**options, limit=6, dry_run=True)
    results = evaluate(**options, limit=6)
    judge = _rows(plan)["judge prometheus"]
    assert len(scripted.judge_calls("longer")) == judge["new"] == 24
    assert results["usage"]["judge"]["scripted:longer,probs=true"]["requests"] == judge["new"] * judge["requests_per_call"]


def test_placeholder_personas_for_computing_sources_and_errors_stay_errors(tmp_path, scripted):
    task = str(_tiny_task(tmp_path))
    plan = evaluate(task=task, model="scripted:writer", judge_model="scripted:longer", persona_source="inferred",
                    persona_source_options={"model": "scripted:writer"}, limit=2, output_dir=tmp_path / "run",
                    cache_path=str(tmp_path / "c.sqlite"), dry_run=True)
    assert scripted.calls == [] and not (tmp_path / "run").exists()
    assert any("computes its personas" in note for note in plan["notes"])
    # The run's own checks still fail first: a bad price, an unknown judge, a run directory of another run.
    from persona_eval.errors import UsageError

    with pytest.raises(UsageError, match="expected MODEL=IN_PER_1M:OUT_PER_1M"):
        evaluate(task=task, model="scripted:writer", limit=2, prices=("scripted:writer",), dry_run=True)
    with pytest.raises(UsageError, match="unknown judge"):
        evaluate(task=task, model="scripted:writer", judge="nosuchjudge", limit=2, dry_run=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"run_key": "abc"}', encoding="utf-8")
    with pytest.raises(UsageError, match="holds a different run"):
        evaluate(task=task, model="scripted:writer", judge_model="scripted:longer", limit=2, output_dir=other, dry_run=True)


def test_infer_dry_run_against_the_real_inference(tmp_path, cache_folder, scripted):
    source = str(DEMO / "data" / "test.jsonl")
    out = tmp_path / "pi.jsonl"
    args = ["infer", source, "-o", str(out), "--model", "scripted:writer", "--limit", "3", "--max-attempts", "1", "--quiet"]
    before = _snapshot(tmp_path)
    result = _cli(*args, "--dry-run", "--json", "--price", "scripted:writer=1:1")
    assert result.exit_code == 0, result.output
    assert _snapshot(tmp_path) == before and not out.exists() and scripted.calls == []
    (row,) = json.loads(result.output)["rows"]
    assert (row["calls"], row["new"], row["cached"], row["resumed"]) == (6, 6, 0, 0)
    result = _cli(*args, "--json")
    assert result.exit_code == 0, result.output
    assert len(scripted.calls) == row["new"]
    counts = json.loads(result.output)["counts"]["requests_this_run"]
    assert counts["computed"] == 6 and counts["input_tokens"] > 0
    result = _cli(*args, "--dry-run", "--json")
    (row,) = json.loads(result.output)["rows"]
    assert (row["new"], row["resumed"]) == (0, 6)
