"""`import-outputs`: no silent choices. Whose judge criteria apply, and every file it does not import.

A dataset folder of an unknown name is refused unless `--dataset` names the dataset; a
`--dataset` contradicting a known folder name is refused; every file left out is listed on
stderr and under `skipped` in models.json with the reason, and a name part such as `..` is
never read or used to build a path. All through the real CLI, in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_eval.cli import _add_plugin_commands, cli
from persona_eval.errors import UsageError
from persona_eval.plugins.commands.import_outputs import import_paper_outputs
from persona_eval.taskfile.loading import load_task, resolve_task

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "paper-outputs"
GOOD = ["dpo__gold-rejected", "dpo__none", "pt_dpo__gold-rejected"]


def invoke(*args: str):
    _add_plugin_commands()
    return CliRunner().invoke(cli, list(args))


def release(folder: Path) -> Path:
    """A small released-style folder of three aligned files (two questions)."""
    folder.mkdir(parents=True, exist_ok=True)
    questions = ["Is it safe to swim after eating?", "How do I bake bread?"]
    personas = ["The user is cautious.", "The user prefers short recipes."]
    files = {
        "dpo__none": [f"Prompt: {q}\nResponse:" for q in questions],
        "pt_dpo__gold-rejected": [f"Prompt: {q}\nPersona: {p}\nResponse:" for q, p in zip(questions, personas)],
        "dpo__gold-rejected": [f"Prompt: {q} {p.replace('The user is', 'I am')}\nResponse:" for q, p in zip(questions, personas)],
    }
    for name, prompts in files.items():
        rows = [{"prompt": prompt, "response": f"{name} {i}"} for i, prompt in enumerate(prompts)]
        (folder / f"{name}.json").write_text(json.dumps(rows), encoding="utf-8")
    return folder


def written(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) if out.exists() else []


# ---- whose judge criteria ---------------------------------------------------------------------------


def test_unknown_folder_without_dataset_is_refused_and_nothing_is_written(tmp_path):
    source = release(tmp_path / "my_outputs")
    out = tmp_path / "out"
    result = invoke("import-outputs", str(source), "-o", str(out))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()  # one line
    assert line == (f"Error: {source.resolve()}: dataset folder 'my_outputs' is none of beavertails, hhh (anthropic_hhh), "
                    "mnemonic; pass --dataset beavertails|hhh|mnemonic to say whose judge criteria apply")
    assert not out.exists()


def test_unknown_folder_in_a_folder_of_datasets_is_refused_before_writing(tmp_path):
    release(tmp_path / "release" / "hhh")
    release(tmp_path / "release" / "other")
    out = tmp_path / "out"
    result = invoke("import-outputs", str(tmp_path / "release"), "-o", str(out))
    assert result.exit_code == 2 and "dataset folder 'other' is none of beavertails" in result.stderr
    assert not out.exists()  # not even the known hhh folder's task


@pytest.mark.parametrize("dataset,packaged", [("hhh", "pe_anthropic_hhh"), ("mnemonic", "pe_mnemonic"),
                                              ("beavertails", "pe_beavertails")])
def test_unknown_folder_with_dataset_gets_that_datasets_criteria(tmp_path, dataset, packaged):
    source = release(tmp_path / "Run 7")
    out = tmp_path / "out"
    result = invoke("import-outputs", str(source), "-o", str(out), "--dataset", dataset, "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    (task,) = manifest["tasks"]
    assert task["task"] == "pe_paper_run_7" and task["judge_criteria_from"] == packaged
    imported = load_task(out / "pe_paper_run_7.yaml")
    assert imported.raw["judge"] == resolve_task(packaged).raw["judge"]
    assert f"judge criteria of {packaged}" in imported.raw["description"]
    assert sorted(e["label"] for e in task["models"]) == GOOD
    assert manifest["skipped"] == [] and result.stderr == ""


def test_mnemonic_criteria_differ_from_beavertails_so_the_choice_is_visible():
    # pe_anthropic_hhh's judge equals pe_beavertails' (the old silent default), pe_mnemonic's does not:
    # the parametrized test above checks judge_criteria_from for hhh and the judge itself for mnemonic.
    assert resolve_task("pe_mnemonic").raw["judge"] != resolve_task("pe_beavertails").raw["judge"]


@pytest.mark.parametrize("folder,dataset,named", [("beavertails", "hhh", "beavertails"),
                                                  ("Anthropic HHH", "mnemonic", "hhh"),
                                                  ("mnemonic", "beavertails", "mnemonic")])
def test_dataset_contradicting_a_known_folder_name_is_refused(tmp_path, folder, dataset, named):
    source = release(tmp_path / folder)
    out = tmp_path / "out"
    result = invoke("import-outputs", str(source), "-o", str(out), "--dataset", dataset)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line == (f"Error: {source.resolve()}: --dataset {dataset} contradicts the folder's name {folder!r} "
                    f"({named}'s outputs); drop --dataset or rename the folder")
    assert not out.exists()


def test_dataset_agreeing_with_the_folder_name_is_fine(tmp_path):
    source = release(tmp_path / "Anthropic-HHH")
    result = invoke("import-outputs", str(source), "-o", str(tmp_path / "out"), "--dataset", "hhh", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tasks"][0]["judge_criteria_from"] == "pe_anthropic_hhh"


def test_an_unknown_dataset_value_is_refused(tmp_path):
    source = release(tmp_path / "beavertails")
    result = invoke("import-outputs", str(source), "-o", str(tmp_path / "out"), "--dataset", "anthropic")
    assert result.exit_code == 2 and "Invalid value for '--dataset'" in result.output
    assert "'beavertails', 'hhh', 'mnemonic'" in result.output
    with pytest.raises(UsageError, match=r"--dataset 'anthropic': use one of beavertails, hhh, mnemonic"):
        import_paper_outputs(source, tmp_path / "out", dataset="anthropic")
    assert not (tmp_path / "out").exists()


# ---- every skipped file, with the reason --------------------------------------------------------------

JUNK = {
    "...__none.json": "model part '...' is not a name (letters, digits, '_', '.', '-', starting with a letter or digit)",
    "..__gold-rejected.json": "unsafe model part '..' (empty, '.', '..' or a path separator)",
    ".__none.json": "unsafe model part '.' (empty, '.', '..' or a path separator)",
    "__none.json": "unsafe model part '' (empty, '.', '..' or a path separator)",
    "a\\b__none.json": "unsafe model part 'a\\\\b' (empty, '.', '..' or a path separator)",
    "dpo__...json": "persona part '..' is none of: none, gold-chosen, gold-rejected, retr-chosen, retr-rejected",
    "dpo__gold.json": "persona part 'gold' is none of: none, gold-chosen, gold-rejected, retr-chosen, retr-rejected",
    "my model__none.json": "model part 'my model' is not a name (letters, digits, '_', '.', '-', starting with a letter or digit)",
    "judge_log.json": "not named <model>__<persona>.json",
    "dpo__none.jsonl": "not a .json file",
    "notes.txt": "not a .json file",
}


def test_every_skipped_file_is_listed_with_its_reason_and_the_rest_imported(tmp_path):
    source = release(tmp_path / "hhh")
    for name in JUNK:
        # Unreadable as released outputs: importing any of them would fail the whole import.
        (source / name).write_text("not JSON", encoding="utf-8")
    (source / "pt_dpo__none.json").mkdir()  # a folder with a released file's name
    out = tmp_path / "out"
    result = invoke("import-outputs", str(source), "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert sorted(e["label"] for e in manifest["tasks"][0]["models"]) == GOOD
    expected = {**JUNK, "pt_dpo__none.json": "not a file (a dataset folder's sub-folders are not read)"}
    assert {Path(s["file"]).name: s["reason"] for s in manifest["skipped"]} == expected
    assert all(Path(s["file"]).parent == source.resolve() for s in manifest["skipped"])
    assert json.loads((out / "models.json").read_text())["skipped"] == manifest["skipped"]
    lines = result.stderr.splitlines()
    assert lines[0] == (f'Skipped 12 files of {source} (not imported; listed under "skipped" in models.json):')
    assert lines[-1] == "  ... and 2 more"
    assert len(lines) == 12
    for line, entry in zip(lines[1:11], manifest["skipped"]):
        assert line == f"  {Path(entry['file']).name}: {entry['reason']}"
    # Nothing was built from a name part: only the task, its data and the manifest.
    assert written(out) == ["models.json", "pe_paper_hhh.yaml", "pe_paper_hhh/test.jsonl"]


def test_a_few_skipped_files_are_all_listed_in_the_summary(tmp_path):
    source = release(tmp_path / "release" / "beavertails")
    (source / "..__none.json").write_text("[]", encoding="utf-8")
    (source / "results.json").write_text("{}", encoding="utf-8")
    (tmp_path / "release" / "README.md").write_text("about", encoding="utf-8")
    (tmp_path / "release" / "figures").mkdir()
    result = invoke("import-outputs", str(tmp_path / "release"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f'Skipped 4 files of {tmp_path / "release"} (not imported; listed under "skipped" in models.json):',
        "  README.md: beside the dataset folders (only the files in them are read)",
        "  figures: a folder without <model>__<persona>.json files",
        "  beavertails/..__none.json: unsafe model part '..' (empty, '.', '..' or a path separator)",
        "  beavertails/results.json: not named <model>__<persona>.json",
    ]
    assert "pe_paper_beavertails" in result.stdout


def test_a_folder_of_only_unusable_files_is_an_error_naming_them(tmp_path):
    folder = tmp_path / "hhh"
    folder.mkdir()
    for name in ("..__none.json", "dpo__...json"):
        (folder / name).write_text("[]", encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("import-outputs", str(folder), "-o", str(out))
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line == (f"Error: {folder.resolve()}: no released outputs (<model>__<persona>.json) in this folder; "
                    "all 2 skipped, first ..__none.json: unsafe model part '..' (empty, '.', '..' or a path separator)")
    assert not out.exists()


# ---- the paper's released outputs ---------------------------------------------------------------------


def test_the_shared_paper_outputs_import_as_before_with_their_extra_files_listed(tmp_path):
    if not SHARED_DATA.exists():
        pytest.skip(f"shared paper outputs not found at {SHARED_DATA}")
    out = tmp_path / "imported"
    result = invoke("import-outputs", str(SHARED_DATA), "--format", "paper", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    labels = sorted(f"{m}__{p}" for m in ("dpo", "pt_dpo") for p in ("gold-chosen", "gold-rejected", "retr-chosen", "retr-rejected"))
    labels = sorted([*labels, "dpo__none"])
    summary = [(t["task"], t["items"], t["judge_criteria_from"], sorted(e["label"] for e in t["models"]))
               for t in manifest["tasks"]]
    assert summary == [("pe_paper_beavertails", 499, "pe_beavertails", labels),
                       ("pe_paper_hhh", 500, "pe_anthropic_hhh", labels)]
    assert all(e["render_check"]["exact"] == e["items"] for t in manifest["tasks"] for e in t["models"])
    root = SHARED_DATA.resolve()
    assert [(Path(s["file"]).relative_to(root).as_posix(), s["reason"]) for s in manifest["skipped"]] == [
        ("README.md", "beside the dataset folders (only the files in them are read)"),
        ("beavertails/judge_comparison_ptdpo_vs_ptsft_example.json", "not named <model>__<persona>.json"),
    ]
    assert "beavertails/judge_comparison_ptdpo_vs_ptsft_example.json: not named" in result.stderr
    assert written(out) == ["models.json", "pe_paper_beavertails.yaml", "pe_paper_beavertails/test.jsonl",
                            "pe_paper_hhh.yaml", "pe_paper_hhh/test.jsonl"]


def test_a_name_with_a_line_break_is_listed_escaped_on_one_line(tmp_path):
    source = release(tmp_path / "hhh")
    (source / "dpo\nx__none.json").write_text("[]", encoding="utf-8")
    result = invoke("import-outputs", str(source), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[1] == ("  'dpo\\nx__none.json': model part 'dpo\\nx' is not a name "
                                             "(letters, digits, '_', '.', '-', starting with a letter or digit)")
