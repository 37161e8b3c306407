"""Task validation through `persona-eval validate` and task discovery through `persona-eval ls tasks`.

Each malformed task in tests/data/bad_tasks starts with a comment ``# expect: LINE TEXT``:
validating it must exit 2 with exactly one line on stderr naming ``FILE:LINE`` and TEXT
(the field, or the kind of YAML error). Data-level errors are built in a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "plugin_fixtures"))

from support import PLUGIN_ENV, fixture_entry_points, restore_plugins  # noqa: E402

from persona_eval.cli import cli  # noqa: E402
from persona_eval.contracts import plugin_manager  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BAD_TASKS = Path(__file__).resolve().parent / "data" / "bad_tasks"
DEMO = REPO / "tasks" / "demo" / "demo.yaml"
BAD_FILES = sorted(BAD_TASKS.glob("*.yaml"))


def invoke(*args):
    """The CLI in-process (fast); stdout and stderr kept apart like a terminal would."""
    import inspect

    separate = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    result = CliRunner(**separate).invoke(cli, [str(a) for a in args])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def cli_run(*args, cwd=REPO, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    env.update({"COLUMNS": "250", **(env_extra or {})})
    return subprocess.run(
        [sys.executable, "-m", "persona_eval.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def expectation(path: Path) -> tuple[int, str]:
    found = re.match(r"# expect: (\d+) (.+)$", path.read_text(encoding="utf-8").splitlines()[0])
    assert found, f"{path} lacks its '# expect: LINE TEXT' header"
    return int(found.group(1)), found.group(2).strip()


def assert_one_line_error(completed, path: Path, line: int | None, *needles: str) -> str:
    assert completed.returncode == 2, (completed.returncode, completed.stdout, completed.stderr)
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    message = lines[0]
    assert message.startswith("Error: ")
    where = r"(^|[ /\\])" + re.escape(path.name) + (f":{line}:" if line is not None else r"(:\d+)?:")
    assert re.search(where, message), (where, message)
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_there_are_enough_malformed_tasks():
    assert len(BAD_FILES) >= 10


@pytest.fixture(scope="module")
def validated_all():
    """One real `persona-eval validate` over every malformed file and the demo: stderr line per file."""
    completed = cli_run("validate", *BAD_FILES, DEMO)
    lines = completed.stderr.strip().splitlines()
    return completed, {path: [line for line in lines if f"{path}:" in line] for path in BAD_FILES}, lines


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_malformed_task_is_one_line_naming_file_line_and_field(validated_all, path):
    completed, by_file, _ = validated_all
    line, needle = expectation(path)
    single = subprocess.CompletedProcess(completed.args, completed.returncode, "", "\n".join(by_file[path]))
    assert_one_line_error(single, path, line, needle)


def test_validate_reports_every_bad_file_and_still_checks_the_good_one(validated_all):
    completed, by_file, lines = validated_all
    assert completed.returncode == 2
    assert len(lines) == len(BAD_FILES)  # nothing but one line per bad file
    assert all(len(found) == 1 for found in by_file.values())
    assert completed.stdout.startswith("ok: ") and "demo.yaml" in completed.stdout and completed.stdout.count("\n") == 1


def test_one_malformed_task_alone_is_exactly_one_line():
    completed = cli_run("validate", BAD_TASKS / "wrong_type_max_new_tokens.yaml")
    assert completed.stdout == ""
    assert_one_line_error(completed, BAD_TASKS / "wrong_type_max_new_tokens.yaml", 6, "generation.max_new_tokens", "integer")


def test_run_with_a_malformed_task_writes_nothing(tmp_path):
    out = tmp_path / "out"
    completed = cli_run("run", "--task", BAD_TASKS / "unknown_strategy.yaml", "--output-dir", out)
    assert_one_line_error(completed, BAD_TASKS / "unknown_strategy.yaml", 6, "strategies.test", "pt_sfft")
    assert not out.exists()


def test_demo_task_validates():
    completed = cli_run("validate", DEMO)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert re.match(r"ok: .*demo\.yaml \(task 'demo', version 1, hash [0-9a-f]{16}\)", completed.stdout)


# ---- data-level errors -------------------------------------------------------------------

GOOD_ROW = {
    "prompt": "How do I keep basil alive?",
    "chosen": "Give it six hours of sun and water when the top inch of soil is dry.",
    "rejected": "Sun and water.",
    "chosen_persona": "The user is a new gardener and prefers reasons with each step.",
    "rejected_persona": "The user is busy and prefers a short answer.",
}


def write_task(folder: Path, lines: list[str] | None, *, data: str = "data/test.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    task = folder / "task.yaml"
    task.write_text(f"name: data-check\ndataset:\n  test: {data}\n", encoding="utf-8")
    if lines is not None:
        (folder / "data").mkdir(exist_ok=True)
        (folder / data).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return task


def row(**changes) -> str:
    record = {**GOOD_ROW, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def test_data_with_a_malformed_jsonl_line(tmp_path):
    task = write_task(tmp_path, [row(id="a"), row(id="b"), '{"id": "c", "prompt": "unterminated', row(id="d")])
    completed = invoke("validate", task)
    assert_one_line_error(completed, Path("test.jsonl"), 3, "malformed JSON Lines record")


def test_data_missing_the_prompt_field(tmp_path):
    task = write_task(tmp_path, [row(id="a"), row(id="b", prompt=...)])
    completed = invoke("validate", task)
    assert_one_line_error(completed, Path("test.jsonl"), None, "test.jsonl:2", "missing field 'prompt'")


def test_data_with_duplicate_ids(tmp_path):
    task = write_task(tmp_path, [row(id="a"), "", row(id="b"), row(id="a")])
    completed = invoke("validate", task)
    message = assert_one_line_error(completed, Path("test.jsonl"), None, "duplicate id 'a'")
    # The duplicate is on line 4 (a blank line 2 is skipped, not miscounted); the first at line 1.
    assert re.search(r"test\.jsonl:4: duplicate id 'a' \(first at .*test\.jsonl:1\)", message), message


def test_data_with_a_non_text_field(tmp_path):
    task = write_task(tmp_path, [row(id="a", chosen=42)])
    completed = invoke("validate", task)
    assert_one_line_error(completed, Path("test.jsonl"), None, "test.jsonl:1", "'chosen' must be text")


def test_missing_data_file(tmp_path):
    task = write_task(tmp_path, None, data="data/nowhere.jsonl")
    completed = invoke("validate", task)
    assert_one_line_error(completed, Path("nowhere.jsonl"), None, "data file not found")


def test_empty_data_file(tmp_path):
    task = write_task(tmp_path, [])
    completed = invoke("validate", task)
    assert_one_line_error(completed, Path("test.jsonl"), None, "no items")


def test_data_checks_can_be_skipped(tmp_path):
    task = write_task(tmp_path, None, data="data/nowhere.jsonl")
    completed = invoke("validate", "--no-data", task)
    assert completed.returncode == 0 and completed.stdout.startswith("ok: ")


# ---- task discovery ----------------------------------------------------------------------


@pytest.fixture
def plugins(monkeypatch):
    original = {key: os.environ.get(key) for key in PLUGIN_ENV}
    for key in PLUGIN_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COLUMNS", "250")

    def load(*names):
        return plugin_manager.load_plugins(entry_points=fixture_entry_points(*names))

    yield load
    restore_plugins(original)


def listed_tasks(output: str) -> dict[str, str]:
    rows = [line.split("│") for line in output.splitlines() if line.startswith("│")]
    return {cells[1].strip(): cells[2].strip() for cells in rows}


def test_ls_tasks_lists_demo_include_paths_and_plugin_task_paths(plugins, tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    write_task(extra / "nested", [row(id="a")])
    (extra / "nested" / "task.yaml").write_text("name: my-extra-task\ndataset:\n  test: data/test.jsonl\n")
    (extra / "not-a-task.yaml").write_text("just: some config\n")  # YAML, but no task: not listed
    env_dir = tmp_path / "from-env"
    write_task(env_dir, [row(id="a")])
    (env_dir / "task.yaml").write_text("name: env-task\ndataset:\n  test: data/test.jsonl\n")
    monkeypatch.setenv("PERSONA_EVAL_TASK_PATH", str(env_dir))

    plugins("good")
    result = CliRunner().invoke(cli, ["ls", "tasks", "--include-path", str(extra)])
    assert result.exit_code == 0, result.output
    tasks = listed_tasks(result.output)
    assert tasks["demo"].endswith("demo.yaml")
    assert tasks["fixture-task"].endswith("fixture_task.yaml")  # from the plugin's register_task_paths hook
    assert tasks["my-extra-task"] == str(extra / "nested" / "task.yaml")
    assert tasks["env-task"] == str(env_dir / "task.yaml")
    assert "just" not in tasks and len(tasks) >= 4

    # Without the plugin its task folder is gone.
    plugins()
    tasks = listed_tasks(CliRunner().invoke(cli, ["ls", "tasks"]).output)
    assert "demo" in tasks and "fixture-task" not in tasks


def test_plugin_task_resolves_by_name(plugins):
    plugins("good")
    from persona_eval.taskfile.loading import resolve_task

    task = resolve_task("fixture-task")
    assert task.spec.version == 3 and [e.id for e in task.load("test")] == ["fx-1", "fx-2"]
