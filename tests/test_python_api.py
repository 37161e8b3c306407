"""The Python entry points: `persona_eval.evaluate`, `persona_eval.load_run`, `persona_eval.rejudge`.

`evaluate` must be the very pipeline `persona-eval run` executes (same run key, directory and
results), `load_run` must read back what the run wrote, item by item, and importing
`persona_eval` must stay light.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import persona_eval
from persona_eval.cli import _add_plugin_commands, cli
from persona_eval.errors import UsageError

ARGS = dict(model="scripted:writer", judge="gpt-4o", judge_model="scripted:longer", limit=3, bootstrap=200)


def _evaluate(tmp_path, **changes):
    return persona_eval.evaluate(**{**ARGS, "cache_path": str(tmp_path / "cache.sqlite"), **changes})


def test_evaluate_is_the_run_command(scripted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = _evaluate(tmp_path)
    assert results["metrics"]["dpq"] == 100.0  # the longer (tailored) answer wins every comparison
    run_dir = tmp_path / results["run_dir"]
    assert json.loads((run_dir / "results.json").read_text())["metrics"] == results["metrics"]
    # The command with the same settings lands in the same run directory and reuses every record.
    _add_plugin_commands()
    scripted.calls.clear()
    outcome = CliRunner().invoke(cli, [
        "run", "--model", "scripted:writer", "--judge", "gpt-4o", "--judge-model", "scripted:longer", "--limit", "3",
        "--bootstrap", "200", "--json", "--quiet"], catch_exceptions=False, env={"PERSONA_EVAL_CACHE": str(tmp_path / "c")})
    assert outcome.exit_code == 0, outcome.output
    from_cli = json.loads(outcome.output)
    assert from_cli["run_key"] == results["run_key"] and from_cli["run_dir"] == results["run_dir"]
    assert from_cli["metrics"] == results["metrics"]
    assert scripted.calls == []  # resumed from the run directory: nothing generated or judged again


def test_config_is_written_before_work_and_completed_at_the_end(scripted, tmp_path):
    seen = {}

    def on_record(record):  # the first record: config.json already exists, without identities yet
        if not seen:
            seen.update(json.loads((tmp_path / "run" / "config.json").read_text()))

    from persona_eval.pipeline import run as pipeline_run

    original = pipeline_run.RunContext.record_written

    def spy(self, record):
        on_record(record)
        return original(self, record)

    pipeline_run.RunContext.record_written = spy
    try:
        _evaluate(tmp_path, output_dir=tmp_path / "run")
    finally:
        pipeline_run.RunContext.record_written = original
    final = json.loads((tmp_path / "run" / "config.json").read_text())
    assert seen["run_key"] == final["run_key"] and seen["identities"] == {}  # not rewritten mid-run
    assert set(final["identities"]) == {"test", "baseline", "judges"}
    assert final["identities"]["judges"]["gpt-4o"]["model"]["model"] == "longer"


def test_load_run_reads_items_outcomes_and_rejudgings(scripted, tmp_path):
    results = _evaluate(tmp_path, output_dir=tmp_path / "run")
    again = persona_eval.rejudge(tmp_path / "run", judge_model="scripted:shorter", cache_path=str(tmp_path / "cache.sqlite"),
                                 resamples=200)
    run = persona_eval.load_run(tmp_path / "run")
    assert run.results["run_key"] == results["run_key"] and len(run.generations) == 6 and len(run.judgments) == 12
    rows = run.items()
    assert [r["item_id"] for r in rows] == [g["item_id"] for g in run.generations if g["role"] == "test"]
    assert all(r["personalization"] == "test" and r["quality"] == "test" for r in rows)
    assert all(r["test_response"] and r["baseline_response"] and r["persona"] for r in rows)
    (name, rejudged), = run.rejudgings.items()
    assert rejudged.results["metrics"] == again["metrics"] and len(rejudged.generations) == 6
    assert all(r["personalization"] == "baseline" for r in rejudged.items())  # the shorter answer wins there


def test_to_pandas_is_one_row_per_item(scripted, tmp_path):
    pd = pytest.importorskip("pandas")
    _evaluate(tmp_path, output_dir=tmp_path / "run")
    frame = persona_eval.load_run(tmp_path / "run").to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 3
    assert {"item_id", "prompt", "persona", "test_response", "baseline_response", "personalization", "quality"} <= set(frame)


def test_load_run_tolerates_a_torn_last_line_and_writes_nothing(scripted, tmp_path):
    _evaluate(tmp_path, output_dir=tmp_path / "run")
    path = tmp_path / "run" / "judgments.jsonl"
    path.write_bytes(path.read_bytes() + b'{"item_id": "x", "crit')
    before = path.read_bytes()
    assert len(persona_eval.load_run(tmp_path / "run").judgments) == 12
    assert path.read_bytes() == before


def test_load_run_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(UsageError, match="not a run directory"):
        persona_eval.load_run(tmp_path)


def test_evaluate_rejects_bad_names_before_writing_anything(scripted, tmp_path):
    with pytest.raises(UsageError, match="did you mean"):
        _evaluate(tmp_path, judge="gpt-4oo", output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_importing_the_package_loads_no_pipeline():
    code = ("import sys, persona_eval; persona_eval.__version__; "
            "print(sorted(m for m in ('persona_eval.api', 'persona_eval.pipeline.run', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
