"""Task-file inheritance with ``include:``: merging, chains, errors located in the right file, discovery.

The task files live in tests/data/include_tasks/ (bases there start with ``_``); cases that
need an odd ``include:`` value are written into a temporary folder. Every error is checked for
its exact FILE:LINE, since pointing at the right line of the right file is the point.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_eval.errors import UsageError
from persona_eval.taskfile.loading import discover_tasks, load_task

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "include_tasks"
PAPER = REPO / "tasks" / "paper"
PAPER_TASKS = sorted(p for p in PAPER.glob("*.yaml"))


def load_error(path: Path) -> UsageError:
    with pytest.raises(UsageError) as caught:
        load_task(path)
    message = str(caught.value)
    assert "\n" not in message, message
    return caught.value


# ---- merging ------------------------------------------------------------------------------


def test_nested_mappings_merge_key_by_key_and_lists_and_scalars_are_replaced():
    task = load_task(DATA / "merge.yaml")
    spec = task.spec
    # generation: one key overridden, one kept from the base; the stop list replaced, not appended to.
    assert (spec.generation.max_new_tokens, spec.generation.temperature) == (300, 0.25)
    assert spec.generation.stop == ["STOP"]
    # Two levels down: judge.generation merges, judge.max_attempts comes from the base.
    assert (spec.judge.generation.max_new_tokens, spec.judge.generation.top_p) == (100, 0.95)
    assert spec.judge.max_attempts == 3
    # A free-form mapping merges the same way.
    assert spec.judge.options == {"feedback": False, "seed": 7}
    assert spec.splits == ["rejected"]
    assert spec.description == "written in the task"
    assert spec.defaults.judge_model == "hf:judge-from-base"
    assert (spec.dataset.test, spec.dataset.train) == ("data/test.jsonl", "data/train.jsonl")
    assert "include" not in task.raw and task.raw["generation"] == {"max_new_tokens": 300, "temperature": 0.25,
                                                                     "stop": ["STOP"]}


def test_an_included_task_hashes_exactly_like_the_same_task_written_flat():
    included, flat = load_task(DATA / "merge.yaml"), load_task(DATA / "merge_flat.yaml")
    assert included.resolved() == flat.resolved()
    assert included.task_hash == flat.task_hash
    # ...and the hash does see the merged values: without the base's max_new_tokens it differs.
    assert included.task_hash != load_task(DATA / "chain.yaml").task_hash


def test_a_chain_of_bases_applies_innermost_first():
    spec = load_task(DATA / "chain.yaml").spec  # chain.yaml -> _mid.yaml -> _base.yaml
    assert spec.generation.max_new_tokens == 200  # _mid over _base
    assert spec.generation.temperature == 0.0  # chain over _base
    assert spec.generation.stop == ["\n\n", "END"]  # _base
    assert (spec.defaults.model, spec.defaults.judge_model) == ("hf:model-from-mid", "hf:judge-from-base")


def test_a_list_of_bases_applies_in_order_and_the_task_last():
    spec = load_task(DATA / "list.yaml").spec  # [_base.yaml, _other.yaml]
    assert spec.description == "written in the other base"
    assert (spec.generation.max_new_tokens, spec.generation.temperature) == (111, 0.75)
    assert spec.generation.stop == ["\n\n", "END"]


def test_a_base_in_another_folder_keeps_its_data_paths():
    task = load_task(DATA / "sub" / "relative.yaml")  # include: ../_base.yaml
    assert task.data_path("test") == DATA / "data" / "test.jsonl"
    assert [e.id for e in task.load("test")] == ["base-1", "base-2"]
    # A key the task writes itself resolves beside the task; the rest beside the base that wrote it.
    own = load_task(DATA / "sub" / "own_data.yaml")
    assert own.data_path("test") == DATA / "sub" / "data" / "own.jsonl"
    assert own.data_path("train") == DATA / "data" / "train.jsonl"
    assert [e.id for e in own.load("test")] == ["own-1"]
    # A base in a subfolder: its ../data/test.jsonl is relative to _bases/, not to the task.
    assert load_task(DATA / "from_folder_base.yaml").data_path("test") == DATA / "data" / "test.jsonl"


def test_a_task_without_include_reads_its_data_beside_itself():
    demo = load_task(REPO / "tasks" / "demo" / "demo.yaml")
    assert demo.data_dirs == {}
    assert demo.data_path("test") == REPO / "tasks" / "demo" / "data" / "test.jsonl"


# ---- errors -------------------------------------------------------------------------------


def test_a_missing_base_is_reported_at_the_include_line():
    error = load_error(DATA / "missing_base.yaml")
    assert error.where == f"{DATA / 'missing_base.yaml'}:3"
    assert f"include: base file '_nowhere.yaml' not found (looked for {DATA / '_nowhere.yaml'})" in str(error)


def test_a_missing_base_in_a_block_list_is_reported_at_its_entry(tmp_path):
    (tmp_path / "_a.yaml").write_text("dataset:\n  test: t.jsonl\n", encoding="utf-8")
    task = tmp_path / "task.yaml"
    task.write_text("name: x\ninclude:\n  - _a.yaml\n  - _b.yaml\n", encoding="utf-8")
    error = load_error(task)
    assert error.where == f"{task}:4" and "'_b.yaml' not found" in str(error)


def test_a_cycle_names_the_chain_at_the_include_that_closes_it():
    error = load_error(DATA / "cycle_a.yaml")
    assert error.where == f"{DATA / '_cycle_b.yaml'}:4"
    chain = f"{DATA / 'cycle_a.yaml'} -> {DATA / '_cycle_b.yaml'} -> {DATA / 'cycle_a.yaml'}"
    assert str(error) == f"{DATA / '_cycle_b.yaml'}:4: include: cycle {chain}"


def test_a_file_including_itself_is_a_cycle():
    error = load_error(DATA / "self_include.yaml")
    path = DATA / "self_include.yaml"
    assert str(error) == f"{path}:4: include: cycle {path} -> {path}"


def test_a_cycle_is_found_however_the_path_is_spelled(tmp_path):
    (tmp_path / "sub").mkdir()
    task = tmp_path / "a.yaml"
    task.write_text("name: x\ninclude: sub/../a.yaml\n", encoding="utf-8")
    error = load_error(task)
    assert error.where == f"{task}:2" and "include: cycle" in str(error)


def test_a_base_that_is_not_a_mapping():
    error = load_error(DATA / "base_not_mapping.yaml")
    assert error.where == f"{DATA / 'base_not_mapping.yaml'}:2"
    assert "include: base file '_list_base.yaml' is not a YAML mapping" in str(error)


def test_an_empty_base_is_not_a_mapping_either(tmp_path):
    (tmp_path / "_empty.yaml").write_text("# nothing\n", encoding="utf-8")
    task = tmp_path / "task.yaml"
    task.write_text("name: x\ndataset:\n  test: t.jsonl\ninclude: _empty.yaml\n", encoding="utf-8")
    error = load_error(task)
    assert error.where == f"{task}:4" and "is not a YAML mapping" in str(error)


def test_invalid_yaml_in_a_base_names_the_base_and_its_line(tmp_path):
    (tmp_path / "_broken.yaml").write_text("dataset:\n  test: [t.jsonl\n", encoding="utf-8")
    task = tmp_path / "task.yaml"
    task.write_text("name: x\ninclude: _broken.yaml\n", encoding="utf-8")
    error = load_error(task)
    assert error.where.startswith(f"{tmp_path / '_broken.yaml'}:") and "invalid YAML" in str(error)


@pytest.mark.parametrize(("value", "got"), [
    ("42", "int"),
    ("{base: _a.yaml}", "a mapping"),
    ("[]", "an empty list"),
    ('""', "an empty string"),
    ("", "null"),
    ("[_a.yaml, 3]", "a list holding int"),
    ("true", "bool"),
], ids=["int", "mapping", "empty-list", "empty-string", "null", "list-with-int", "bool"])
def test_an_include_value_of_the_wrong_type(tmp_path, value, got):
    (tmp_path / "_a.yaml").write_text("dataset:\n  test: t.jsonl\n", encoding="utf-8")
    task = tmp_path / "task.yaml"
    task.write_text(f"name: x\n# the include below is malformed\ninclude: {value}\n", encoding="utf-8")
    error = load_error(task)
    assert str(error) == (f"{task}:3: include: must be the path of a base file or a list of such paths, got {got}")


def test_a_validation_error_in_a_base_names_the_base_file_and_line():
    error = load_error(DATA / "bad_in_base.yaml")
    assert error.where == f"{DATA / '_bad_base.yaml'}:5"
    assert str(error).startswith(f"{DATA / '_bad_base.yaml'}:5: generation.max_new_tokens: ")


def test_a_validation_error_in_the_including_file_names_that_file_and_line():
    error = load_error(DATA / "bad_in_task.yaml")
    assert error.where == f"{DATA / 'bad_in_task.yaml'}:6"
    assert "judge.max_attempts: " in str(error)


def test_a_base_reached_through_another_folder_is_named_by_that_path(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "_b.yaml").write_text("name: x\ndataset:\n  test: t.jsonl\nfew_shot:\n  k: -1\n", encoding="utf-8")
    task = tmp_path / "sub" / "task.yaml"
    task.write_text("include: ../_b.yaml\n", encoding="utf-8")
    error = load_error(task)
    assert error.where == f"{tmp_path / 'sub' / '..' / '_b.yaml'}:5" and "few_shot.k" in str(error)


def test_a_missing_field_of_the_merged_task_is_reported_in_the_including_file(tmp_path):
    (tmp_path / "_b.yaml").write_text("description: no dataset here\n", encoding="utf-8")
    task = tmp_path / "task.yaml"
    task.write_text("# a task whose base forgot the dataset\nname: x\ninclude: _b.yaml\n", encoding="utf-8")
    error = load_error(task)
    assert str(error) == f"{task}:2: dataset: required field is missing"


def test_a_template_check_in_a_base_names_the_base_file_and_line():
    error = load_error(DATA / "bad_strategy_in_base.yaml")
    assert error.where == f"{(DATA / '_bad_strategy_base.yaml').resolve()}:4"
    assert "strategies.test: unknown strategy 'pt_sfft'" in str(error)


def test_validate_prints_one_line_naming_the_base():
    from persona_eval.cli import cli

    separate = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    result = CliRunner(**separate).invoke(cli, ["validate", str(DATA / "bad_in_base.yaml"), str(DATA / "merge.yaml")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {DATA / '_bad_base.yaml'}:5: generation.max_new_tokens: Input should be greater than 0"]
    assert result.stdout.startswith(f"ok: {DATA / 'merge.yaml'} (task 'inc-merge'")


# ---- discovery ----------------------------------------------------------------------------


def test_discovery_skips_bases_and_lists_tasks_that_only_include_their_dataset():
    found = discover_tasks([str(DATA)])
    assert {"inc-merge", "inc-chain", "inc-list", "inc-relative", "inc-own-data", "inc-from-folder-base"} <= set(found)
    # _named_base.yaml and _bases/complete.yaml are whole tasks, but bases by their names.
    assert not {"inc-hidden-by-name", "inc-hidden-in-folder"} & set(found)
    assert not [p for p in found.values() if any(part.startswith("_") for part in p.relative_to(REPO).parts)]


def test_ls_tasks_does_not_list_the_paper_bases():
    from persona_eval.cli import cli

    result = CliRunner().invoke(cli, ["ls", "tasks"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "pe_beavertails " in result.output and "_base" not in result.output


# ---- the paper tasks on their shared base ---------------------------------------------------


def test_the_paper_tasks_are_written_on_the_shared_base():
    assert len(PAPER_TASKS) == 6
    for path in PAPER_TASKS:
        text = path.read_text(encoding="utf-8")
        assert "\ninclude: _base/" in text, path
        assert "judge_model" not in text and "chosen_persona_gold" not in text, path  # shared, so in the base only
        assert "include" not in load_task(path).raw


def test_the_paper_tasks_keep_their_recorded_hashes():
    recorded = json.loads((REPO / "tests" / "data" / "identity_snapshot.json").read_text(encoding="utf-8"))["tasks"]
    for path in PAPER_TASKS:
        task = load_task(path)
        assert task.task_hash == recorded[task.name]["hash"], task.name


def test_a_paper_task_written_flat_hashes_the_same(tmp_path):
    import yaml

    for path in PAPER_TASKS:
        task = load_task(path)
        flat = tmp_path / path.name
        flat.write_text(yaml.safe_dump(task.raw, sort_keys=False), encoding="utf-8")
        assert load_task(flat).task_hash == task.task_hash, path.name
