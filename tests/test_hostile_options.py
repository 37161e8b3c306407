"""Hostile options and text: numbers out of range, specs that fail late, text without bounds.

In the spirit of `test_hostile_input.py`: every case ends with exactly one ``Error:`` line on
stderr (at most about 300 characters) naming the option, file or item at fault, exit 2, no
traceback, and no run folder or file left behind. Three classes:

1. numeric options: every bounded option of every command (`limits.NUMERIC`) refuses values
   out of range before any work, on the command line and in the Python API;
2. specs and options that only their backend or judge can check (``dtype=float99``,
   ``--judge-option max_attempts=-1``) fail before the run (or re-judge) folder exists;
3. unbounded text: a 10 MB persona is refused at once (``personas`` no longer hangs), a
   5,000-character option value makes a short error line, and an input longer than a
   model's context is refused before generation, naming the item.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import reliability_support as rs
from click.testing import CliRunner
from openai_server_support import serve

import persona_eval
from persona_eval.cli import cli
from persona_eval.errors import MAX_ERROR_CHARS, UsageError
from persona_eval.limits import ERROR_LINE_CHARS, NUMERIC, TEXT

ITEMS = 4


@pytest.fixture(scope="module")
def judge_server():
    with serve(rs.judge_responder(), models=["judge"]) as server:
        yield server


@pytest.fixture
def work(tmp_path):
    task = rs.write_task(tmp_path / "task", ITEMS)
    rs.write_outputs(tmp_path / "test.json", ITEMS, "test")
    rs.write_outputs(tmp_path / "base.json", ITEMS, "baseline")
    return tmp_path, task


def run_args(root: Path, task: Path, url: str, *extra: str, model: str | None = None, judge_model: str | None = None) -> list[str]:
    return [
        "run", "--task", str(task), "--split", "rejected",
        "--model", model or f"file:{root / 'test.json'}", "--baseline", f"file:{root / 'base.json'}",
        "--judge", "gpt-4o", "--judge-model", judge_model or f"openai:judge,base_url={url},max_retries=1,backoff=0.01",
        "--limit", "0", "--output-dir", str(root / "out"), "--bootstrap", "50", "--quiet", *extra,
    ]


def one_error_line(result, *places: str, code: int = 2) -> str:
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, f"exit {result.exit_code}: {result.stderr!r}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"not one error line: {result.stderr!r}"
    # the message at most ERROR_LINE_CHARS; a place (file:line) before it at most half as long again
    assert len(lines[0]) <= ERROR_LINE_CHARS * 3 // 2 + len("Error: : "), f"{len(lines[0])} characters: {lines[0]}"
    for place in places:
        assert place in lines[0], f"the error does not name {place!r}: {lines[0]}"
    assert "Traceback" not in result.output
    return lines[0]


def invoke(args):
    from persona_eval.cli import _add_plugin_commands

    if "infer" not in cli.commands:  # the plugin commands, registered once
        _add_plugin_commands()
    return CliRunner().invoke(cli, args)


# ---- 1. numeric options ------------------------------------------------------------------------

# (command line without the bad option, option, a value out of range)
BAD_NUMBERS = [
    (["run"], "--bootstrap", "-5"),
    (["run"], "--bootstrap", "1000000000"),
    (["run"], "--limit", "-1"),
    (["run"], "--seed", "-1"),
    (["run"], "--seed", str(2**40)),
    (["run"], "--bootstrap", "1e3"),
    (["judge", "RUN"], "--bootstrap", "-1"),
    (["personas"], "--limit", "-2"),
    (["infer", "pairs.jsonl", "-o", "x.jsonl"], "--k", "-1"),
    (["infer", "pairs.jsonl", "-o", "x.jsonl"], "--max-attempts", "0"),
    (["infer", "pairs.jsonl", "-o", "x.jsonl"], "--max-new-tokens", "0"),
    (["infer", "pairs.jsonl", "-o", "x.jsonl"], "--temperature", "nan"),
    (["infer", "pairs.jsonl", "-o", "x.jsonl"], "--temperature", "-0.5"),
    (["infer", "pairs.jsonl", "-o", "x.jsonl"], "--max-response-chars", "-1"),
    (["infer", "pairs.jsonl", "-o", "x.jsonl"], "--limit", "-1"),
    (["pi-accuracy", "personas.jsonl"], "--max-new-tokens", "100000"),
    (["pi-accuracy", "personas.jsonl"], "--limit", "-4"),
    (["analyze", "personas.jsonl"], "--top", "0"),
    (["analyze", "personas.jsonl"], "--min-count", "-1"),
    (["serve-openai"], "--port", "70000"),
    (["serve-openai"], "--max-batch", "0"),
    (["serve-openai"], "--batch-wait-ms", "-1"),
    (["train", "sft", "--output", "o"], "--max-steps", "0"),
    (["train", "dpo", "--output", "o"], "--limit", "-1"),
    (["leaderboard", "build", "r", "-o", "l.json"], "--examples", "11"),
]


@pytest.mark.parametrize("head,option,value", BAD_NUMBERS, ids=[f"{h[0]}{o}={v}" for h, o, v in BAD_NUMBERS])
def test_numbers_out_of_range_are_one_usage_line(head, option, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke([*head, option, value])
    one_error_line(result, option)
    assert list(tmp_path.iterdir()) == [], "a file was written"


def test_every_numeric_option_of_every_command_is_bounded():
    """No `type=int`/`type=float` option is left unbounded on any command."""
    invoke(["--help"])  # registers the plugin commands
    unbounded = []

    def walk(command, path):
        import click

        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
                if not isinstance(param.type, (click.IntRange, click.FloatRange)):
                    unbounded.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(cli, "persona-eval")
    assert unbounded == []


def test_the_bounds_are_documented_ranges():
    for name, bound in NUMERIC.items():
        assert bound.low <= bound.high and bound.why, name
    assert NUMERIC["bootstrap"].high <= 1_000_000  # never the tens of GB a 10^9 bootstrap allocated


def test_a_bad_number_is_refused_before_generation(work, judge_server):
    """`--bootstrap 1000000000` used to die only after all generation and judging."""
    root, task = work
    result = invoke(run_args(root, task, judge_server.base_url, "--bootstrap", "1000000000"))
    one_error_line(result, "--bootstrap")
    assert not (root / "out").exists()


@pytest.mark.parametrize("name,value,option", [
    ("bootstrap", -5, "bootstrap"), ("bootstrap", 10**9, "bootstrap"), ("limit", -3, "limit"), ("seed", -1, "seed"),
    ("bootstrap", "1000", "bootstrap"), ("limit", 2.5, "limit"), ("bootstrap", True, "bootstrap"),
])
def test_the_python_api_refuses_out_of_range_values_before_any_work(name, value, option, work):
    root, task = work
    with pytest.raises(UsageError, match=option) as caught:
        persona_eval.evaluate(task=str(task), model=f"file:{root / 'test.json'}", output_dir=root / "out", **{name: value})
    assert len(str(caught.value)) <= MAX_ERROR_CHARS and "\n" not in str(caught.value)
    assert not (root / "out").exists()


def test_the_python_rejudge_refuses_a_bad_bootstrap(tmp_path):
    with pytest.raises(UsageError, match="resamples"):
        persona_eval.rejudge(tmp_path / "no-run", resamples=-1)


def test_zero_bootstrap_and_zero_limit_are_accepted(work, judge_server):
    """0 resamples = no intervals, 0 items = all: documented values, not errors."""
    root, task = work
    result = CliRunner().invoke(cli, run_args(root, task, judge_server.base_url, "--bootstrap", "0"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    results = json.loads((root / "out" / "results.json").read_text())
    assert results["metrics"]["items"] == ITEMS


# ---- 2. no half-written run folder on spec and option errors -----------------------------------


def _no_run_files(root: Path) -> None:
    leftovers = [str(p) for p in root.rglob("*") if p.name in ("config.json", "generations.jsonl", "judgments.jsonl")
                 and "task" not in p.parts]
    assert leftovers == [], f"half-written run files: {leftovers}"


@pytest.mark.parametrize("spec,place", [
    ("hf:x,dtype=float99", "float99"),
    ("hf:x,threads=lots", "threads"),
])
def test_a_bad_model_spec_option_leaves_no_run_folder(spec, place, work, judge_server):
    root, task = work
    result = invoke(run_args(root, task, judge_server.base_url, model=spec))
    one_error_line(result, place)
    assert not (root / "out").exists()


def test_a_bad_judge_model_option_leaves_no_run_folder(work, judge_server):
    root, task = work
    result = invoke(run_args(root, task, judge_server.base_url, judge_model="hf:x,dtype=float99"))
    one_error_line(result, "float99")
    assert not (root / "out").exists()


@pytest.mark.parametrize("option,place", [
    ("max_attempts=-1", "max_attempts"),
    ("max_attempts=lots", "max_attempts"),
    ("max_attempts=1000", "max_attempts"),
])
def test_a_bad_judge_option_value_leaves_no_run_folder(option, place, work, judge_server):
    root, task = work
    result = invoke(run_args(root, task, judge_server.base_url, "--judge-option", option))
    one_error_line(result, "--judge-option", place)
    assert not (root / "out").exists()


@pytest.fixture
def finished_run(work, judge_server):
    root, task = work
    result = CliRunner().invoke(cli, run_args(root, task, judge_server.base_url), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "out"


@pytest.mark.parametrize("extra,place", [
    (["--judge-model", "hf:x,dtype=float99"], "float99"),
    (["--judge-option", "max_attempts=-1"], "max_attempts"),
    (["--judge-option", "max_attempts=often"], "max_attempts"),
    (["--bootstrap", "-1"], "--bootstrap"),
])
def test_rejudge_with_a_bad_judge_leaves_no_judge_folder(extra, place, finished_run):
    result = invoke(["judge", str(finished_run), "--quiet", *extra])
    one_error_line(result, place)
    assert list(finished_run.glob("judge-*")) == []


# ---- 3. unbounded text -------------------------------------------------------------------------


def _persona_file(root: Path, persona_of_first: str) -> Path:
    path = root / "personas.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(ITEMS):
            text = persona_of_first if i == 0 else f"The user is person {i}."
            handle.write(json.dumps({"id": rs.item(i)["id"], "persona": text}) + "\n")
    return path


BIG_PERSONA = "The user is " + "fond of tea and long walks. " * 360_000  # ~10 MB, many short words


def test_a_ten_megabyte_persona_is_refused_at_once_by_personas(work):
    """It used to hang for minutes: rich re-partitions a cell's text at every wrapped line."""
    root, task = work
    path = _persona_file(root, BIG_PERSONA)
    completed = subprocess.run(rs.cli_command("personas", "--task", str(task), "--persona-file", str(path)),
                               capture_output=True, text=True, timeout=60, env=rs.cli_env(root / "cache"))
    assert completed.returncode == 2, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and len(lines[0]) <= ERROR_LINE_CHARS * 3 // 2 + 9, completed.stderr
    assert "personas.jsonl:1" in lines[0] and "item-00000" in lines[0] and "10,000" in lines[0]


def test_a_ten_megabyte_persona_is_refused_by_run_before_the_run_folder(work, judge_server):
    root, task = work
    path = _persona_file(root, BIG_PERSONA)
    result = invoke(run_args(root, task, judge_server.base_url, "--persona-file", str(path)))
    one_error_line(result, "personas.jsonl:1", "item-00000")
    assert not (root / "out").exists()


def test_a_persona_at_the_limit_is_accepted_and_printed_quickly(work):
    root, task = work
    text = ("The user is " + "fond of tea. " * 2_000)[: TEXT["persona"].chars]
    path = _persona_file(root, text)
    out = root / "personas-out.jsonl"
    result = CliRunner().invoke(cli, ["personas", "--task", str(task), "--persona-file", str(path), "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text().splitlines()[0])["persona"] == text  # the file keeps the whole persona


def test_a_long_persona_flag_is_refused(work, judge_server):
    root, task = work
    result = invoke(run_args(root, task, judge_server.base_url, "--persona", "The user is " + "x" * 20_000))
    one_error_line(result, "persona")
    assert not (root / "out").exists()


def test_an_over_long_prompt_names_the_item(work, judge_server):
    root, task = work
    lines = (task.parent / "test.jsonl").read_text().splitlines()
    lines[2] = json.dumps({**rs.item(2), "prompt": "why " * 60_000})
    (task.parent / "test.jsonl").write_text("\n".join(lines) + "\n")
    result = invoke(run_args(root, task, judge_server.base_url))
    one_error_line(result, "item-00002", "prompt")
    assert not (root / "out").exists()


@pytest.mark.parametrize("args", [
    lambda root, task, url: run_args(root, task, url, "--judge-option", "feedback=" + "y" * 5_000),
    lambda root, task, url: run_args(root, task, url, model="nosuchbackend:" + "m" * 5_000),
    lambda root, task, url: run_args(root, task, url, model="file:" + "m" * 5_000),
    lambda root, task, url: run_args(root, task, url, "--strategy", "s" * 5_000),
    lambda root, task, url: run_args(root, task, url, "--persona-source", "p" * 5_000),
    lambda root, task, url: ["run", "--task", "t" * 5_000],
    lambda root, task, url: ["run", "--split", "z" * 5_000],
])
def test_a_five_thousand_character_value_makes_a_short_error_line(args, work, judge_server):
    root, task = work
    one_error_line(invoke(args(root, task, judge_server.base_url)))
    assert not (root / "out").exists()


def test_error_lines_keep_the_place_and_are_one_line():
    error = UsageError("bad value " + "v" * 5_000 + "\nsecond line; choose another --output-dir", where="task.yaml:12")
    text = str(error)
    assert len(text) <= MAX_ERROR_CHARS + len("task.yaml:12: ") and "\n" not in text
    assert text.startswith("task.yaml:12: bad value") and text.endswith("choose another --output-dir")


def test_an_input_past_the_model_context_is_refused_before_generation(work, judge_server, monkeypatch):
    from persona_eval.plugins.generators.file import FileGenerator

    root, task = work
    monkeypatch.setattr(FileGenerator, "context_length", lambda self: 16, raising=False)
    result = invoke(run_args(root, task, judge_server.base_url))
    one_error_line(result, "item-00000", "context")
    assert not (root / "out").exists()


def test_a_short_input_within_the_context_runs(work, judge_server, monkeypatch):
    from persona_eval.plugins.generators.file import FileGenerator

    root, task = work
    monkeypatch.setattr(FileGenerator, "context_length", lambda self: 8192, raising=False)
    result = CliRunner().invoke(cli, run_args(root, task, judge_server.base_url), catch_exceptions=False)
    assert result.exit_code == 0, result.output


# ---- as real processes: exit status, stderr and a timeout -------------------------------------


@pytest.mark.parametrize("extra,place", [
    (["--bootstrap", "-5"], "--bootstrap"),
    (["--model", "hf:x,dtype=float99"], "float99"),
    (["--judge-option", "max_attempts=-1"], "max_attempts"),
])
def test_real_processes(extra, place, work):
    root, task = work
    args = ["run", "--task", str(task), "--output-dir", str(root / "out"), "--quiet", *extra]
    completed = subprocess.run(rs.cli_command(*args), capture_output=True, text=True, timeout=120,
                               env=rs.cli_env(root / "cache"))
    assert completed.returncode == 2, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and place in lines[0], completed.stderr
    assert not (root / "out").exists()


@pytest.mark.slow
def test_the_hf_backend_reports_its_context_and_a_too_long_input_is_refused_before_any_folder(tmp_path):
    from persona_eval.contracts.records import GenParams, GenRequest
    from persona_eval.errors import UsageError
    from persona_eval.pipeline.generate import CHARS_PER_TOKEN_BOUND, check_context_lengths
    from persona_eval.plugins.generators.hf import HFGenerator

    generator = HFGenerator("embedded", device="cpu")
    context = generator.context_length()
    assert context == 8192  # SmolLM2-135M's config.json: max_position_embeddings
    params = GenParams(max_new_tokens=192)
    fits = GenRequest(id="ok", prompt="x" * 1000, params=params)
    check_context_lengths(generator, [fits], "test")
    too_long = GenRequest(id="huge", prompt="x" * ((context - 192) * CHARS_PER_TOKEN_BOUND + 1), params=params)
    with pytest.raises(UsageError, match=r"item 'huge' \(--model\).*8,192-token context"):
        check_context_lengths(generator, [fits, too_long], "test")


def test_a_device_that_is_no_torch_device_fails_before_the_run_folder(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--model", "hf:embedded,device=toaster", "--limit", "1", "--quiet",
                                      "--output-dir", str(out)])
    assert result.exit_code == 2, result.output
    assert "device 'toaster' is not a torch device" in result.output
    assert not out.exists()


@pytest.mark.parametrize("option", ["feedback=maybe", "feedback=2", "use_logprobs=often"])
def test_a_judge_switch_that_is_not_true_or_false_is_refused_before_the_run_folder(option, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--judge-option", option, "--limit", "1", "--quiet", "--output-dir", str(out)])
    assert result.exit_code == 2, result.output
    assert f"judge option {option.split('=')[0]}=" in result.output and "expected true or false" in result.output
    assert not out.exists()
