"""`--judge-option KEY=VALUE`: judge options from the command line, over the task's `judge.options`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from persona_eval.cli import _add_plugin_commands, cli
from persona_eval.contracts.model_spec import parse_options
from persona_eval.errors import UsageError
from persona_eval.pipeline.run import Run, RunOptions, rejudge


def _options(tmp_path, **changes):
    options = dict(model="scripted:writer", judges=("gpt-4o",), judge_model="scripted:longer,probs=true", limit=2,
                   output_dir=str(tmp_path / "run"), cache_path=str(tmp_path / "cache.sqlite"), bootstrap=50)
    options.update(changes)
    return RunOptions(**options)


def _invoke(*args):
    _add_plugin_commands()
    return CliRunner().invoke(cli, list(args))


def test_parse_options_coerces_values_and_rejects_malformed():
    assert parse_options(["rationale=false", "max_attempts=3", "name=x=y"], option="--judge-option") == {
        "rationale": False, "max_attempts": 3, "name": "x=y"}
    with pytest.raises(UsageError, match=r"--judge-option 'rationale': expected KEY=VALUE"):
        parse_options(["rationale"], option="--judge-option")
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_options(["=true"], option="--judge-option")


def test_option_reaches_the_judge_and_is_part_of_the_run(scripted, tmp_path):
    plain = Run(_options(tmp_path), progress=False)
    fast = Run(_options(tmp_path, judge_options={"rationale": False}), progress=False)
    assert fast.run_key != plain.run_key  # a different judge is a different run
    assert "judge_options" not in plain.key_config  # runs without the flag keep their keys

    results = fast.execute()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["judge_options"] == {"rationale": False}
    assert config["identities"]["judges"]["gpt-4o"]["rationale"] is False
    # rationale=False reads P(A)/P(B): no text generation was asked of the judge
    assert scripted.judge_calls() == []
    assert results["metrics"]["dpq"] == 100.0


def test_unknown_option_fails_before_any_work(scripted, tmp_path):
    with pytest.raises(UsageError, match=r"--judge-option 'feedbak': no judge of this run \(gpt-4o\) has that option"):
        Run(_options(tmp_path, judge_options={"feedbak": False}), progress=False)
    with pytest.raises(UsageError, match=r"--judge-option 'params' is set by the harness"):
        Run(_options(tmp_path, judge_options={"params": "x"}), progress=False)
    assert not (tmp_path / "run").exists() and scripted.calls == []


def test_cli_flag_errors_are_one_line_usage_errors(scripted, tmp_path):
    result = _invoke("run", "--model", "scripted:writer", "--judge", "gpt-4o", "--judge-model", "scripted:longer",
                     "--judge-option", "rationale", "--output-dir", str(tmp_path / "run"), "--quiet")
    assert result.exit_code == 2
    assert "--judge-option 'rationale': expected KEY=VALUE" in result.output
    assert not (tmp_path / "run").exists()


def test_rejudge_keeps_the_runs_options_unless_given(scripted, tmp_path):
    Run(_options(tmp_path, judge_options={"rationale": False}), progress=False).execute()
    run_dir = tmp_path / "run"

    scripted.calls.clear()
    same = rejudge(run_dir, judge_model="scripted:shorter,probs=true", cache_path=str(tmp_path / "cache.sqlite"),
                   resamples=50)
    assert same["identities"]["judges"]["gpt-4o"]["rationale"] is False
    assert scripted.judge_calls() == []  # still probability verdicts
    assert same["config"]["judging"]["judge_options"] == {"rationale": False}

    scripted.calls.clear()
    written = rejudge(run_dir, judge_model="scripted:shorter,probs=true", judge_options={"rationale": True},
                      cache_path=str(tmp_path / "cache.sqlite"), resamples=50)
    assert written["identities"]["judges"]["gpt-4o"]["rationale"] is True
    assert len(scripted.judge_calls("shorter")) == 2 * 4  # written verdicts this time
    assert written["run_dir"] != same["run_dir"]  # each option set keeps its own folder
    assert written["metrics"]["dpq"] == same["metrics"]["dpq"] == -100.0

    with pytest.raises(UsageError, match="has that option"):
        rejudge(run_dir, judge_options={"nope": 1}, cache_path=str(tmp_path / "cache.sqlite"))


def test_a_mixed_panel_gives_each_judge_the_options_it_takes(scripted, tmp_path):
    options = _options(tmp_path, judges=("gpt-4o", "prometheus"), judge_options={"feedback": False, "max_attempts": 3})
    Run(options, progress=False).execute()
    identities = json.loads((tmp_path / "run" / "config.json").read_text())["identities"]["judges"]
    assert identities["prometheus"]["feedback"] is False and "feedback" not in identities["gpt-4o"]
    assert identities["prometheus"]["max_attempts"] == identities["gpt-4o"]["max_attempts"] == 3
