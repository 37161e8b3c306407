"""`persona-eval judge RUN_DIR`: re-judging saved generations, never reusing another judge's verdicts."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from persona_eval.cli import _add_plugin_commands, cli
from persona_eval.pipeline.run import Run, RunOptions, rejudge

PAIRS_PER_ITEM = 4  # 2 criteria x 2 orders


def _run(tmp_path, **changes):
    options = dict(model="scripted:writer", judges=("gpt-4o",), judge_model="scripted:longer", limit=3,
                   output_dir=str(tmp_path / "run"), cache_path=str(tmp_path / "cache.sqlite"), bootstrap=200)
    options.update(changes)
    return Run(RunOptions(**options), progress=False).execute()


def _invoke(*args):
    _add_plugin_commands()
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_rejudge_with_another_judge_model(scripted, tmp_path):
    first = _run(tmp_path)
    run_dir = tmp_path / "run"
    original = (run_dir / "results.json").read_bytes()
    assert first["metrics"]["dpq"] == 100.0  # the longer (tailored) answer wins
    writer_calls = len([c for c in scripted.calls if c[0] == "writer"])
    scripted.calls.clear()

    again = rejudge(run_dir, judge_model="scripted:shorter", cache_path=str(tmp_path / "cache.sqlite"), resamples=200)
    # nothing regenerated; every pair judged anew by the other model: no verdict reused
    assert [c for c in scripted.calls if c[0] == "writer"] == []
    assert len(scripted.judge_calls("shorter")) == 3 * PAIRS_PER_ITEM
    assert again["metrics"]["dpq"] == -100.0
    out_dir = run_dir / again["run_dir"].split("/")[-1]
    assert out_dir.parent == run_dir and out_dir.name.startswith("judge-gpt-4o-shorter-")
    assert json.loads((out_dir / "results.json").read_text())["metrics"]["dpq"] == -100.0
    assert (run_dir / "results.json").read_bytes() == original  # the run's own results untouched
    assert again["rejudge_of"] == str(run_dir)
    assert again["identities"]["judges"]["gpt-4o"]["model"]["model"] == "shorter"
    records = [json.loads(line) for line in (out_dir / "judgments.jsonl").read_text().splitlines()]
    assert len(records) == 3 * PAIRS_PER_ITEM and not any(r["cached"] for r in records)
    assert writer_calls == 6

    # the same re-judging again: everything from its own records, no judge call
    scripted.calls.clear()
    same = rejudge(run_dir, judge_model="scripted:shorter", cache_path=str(tmp_path / "cache.sqlite"), resamples=200)
    assert scripted.calls == [] and same["metrics"] == again["metrics"]

    # the original judge re-judging into a fresh folder: served from the cache, same verdicts as the run
    scripted.calls.clear()
    back = rejudge(run_dir, output_dir=tmp_path / "fresh", cache_path=str(tmp_path / "cache.sqlite"), resamples=200)
    assert scripted.calls == []
    assert back["metrics"] == first["metrics"]
    assert all(json.loads(line)["cached"] for line in (tmp_path / "fresh" / "judgments.jsonl").read_text().splitlines())


def test_changing_the_rubric_is_a_different_judge(scripted, tmp_path):
    """Same judge name and model, edited rubric: the verdicts are not reused from records or cache."""
    _run(tmp_path)
    run_dir = tmp_path / "run"
    config = json.loads((run_dir / "config.json").read_text())
    config["task"]["resolved"]["judge"]["criteria"]["quality"]["rubric"] = "[Is the response concise?]"
    (run_dir / "config.json").write_text(json.dumps(config))
    scripted.calls.clear()
    out = tmp_path / "edited"
    out.mkdir()
    # Seed the output folder with the original judge's records: they must be ignored (other rubric).
    shutil.copy(run_dir / "judgments.jsonl", out / "judgments.jsonl")
    results = rejudge(run_dir, output_dir=out, cache_path=str(tmp_path / "cache.sqlite"), resamples=100)
    assert len(scripted.judge_calls("longer")) == 3 * PAIRS_PER_ITEM
    assert results["identities"]["judges"]["gpt-4o"]["rubric"] != json.loads(
        (tmp_path / "run" / "results.json").read_text())["identities"]["judges"]["gpt-4o"]["rubric"]


def test_several_judges_and_the_cli(scripted, tmp_path):
    _run(tmp_path)
    run_dir = tmp_path / "run"
    result = _invoke("judge", str(run_dir), "--judge", "gpt-4o", "--judge", "prometheus",
                     "--judge", "gpt-4o@scripted:shorter", "--judge-model", "scripted:longer", "--json", "--quiet",
                     "--bootstrap", "100")
    assert result.exit_code == 0, result.output
    results = json.loads(result.output)
    assert results["judges"] == ["gpt-4o", "prometheus", "gpt-4o@scripted:shorter"]
    assert set(results["per_judge"]) == set(results["judges"])
    assert results["per_judge"]["gpt-4o@scripted:shorter"]["dpq"] == -100.0
    assert results["metrics"]["dpq"] == 100.0  # two of three judges prefer the test answers
    assert results["metrics"]["voting"]["unanimous"] == 0

    table = _invoke("judge", str(run_dir), "--judge", "gpt-4o", "--judge-model", "scripted:shorter", "--quiet")
    assert table.exit_code == 0 and "dPQ = -100.0" in table.output


def test_bad_run_directories(scripted, tmp_path):
    missing = _invoke("judge", str(tmp_path / "nothing"))
    assert missing.exit_code == 2 and "no config.json" in missing.output
    _run(tmp_path)
    run_dir = tmp_path / "run"
    unknown = _invoke("judge", str(run_dir), "--judge", "gpt4o")
    assert unknown.exit_code == 2 and "did you mean" in unknown.output
    lines = (run_dir / "generations.jsonl").read_text().splitlines()
    (run_dir / "generations.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    incomplete = _invoke("judge", str(run_dir), "--judge-model", "scripted:shorter")
    assert incomplete.exit_code == 2 and "generation incomplete" in incomplete.output
    assert "generations.jsonl" in incomplete.output
    assert not list(run_dir.glob("judge-*"))  # nothing half-written
