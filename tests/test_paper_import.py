"""`persona-eval import-outputs --format paper`: released outputs -> a local task + `file:` models, judged.

The shared paper outputs are read in place (imports go to tmp folders). Error handling is
tested on small released-style folders written here. The judged runs go through the whole
harness: once with a deterministic judge whose verdicts we can predict from the released
responses themselves (it prefers the longer response), and once (slow) with the embedded
model as Prometheus judge, `--limit 4`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_eval.cli import _add_plugin_commands, cli
from persona_eval.errors import UsageError
from persona_eval.pipeline.run import Run, RunOptions
from persona_eval.plugins.commands.import_outputs import import_paper_outputs
from persona_eval.plugins.generators.file import strip_end_markers
from persona_eval.taskfile.loading import load_task

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "paper-outputs"


def invoke(*args: str):
    _add_plugin_commands()
    return CliRunner().invoke(cli, list(args))


def _write(folder: Path, name: str, rows) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def small_release(folder: Path, questions=("Is it safe to swim after eating?", "Human: How do I bake bread?"),
                  prefix: str = "") -> Path:
    """A released-style folder: dpo__none, pt_dpo__gold-rejected, dpo__gold-rejected, dpo__retr-chosen."""
    gold_r = ["The user is cautious and prefers clear warnings.", "The user prefers short recipes."]
    retr_c = ["The user is a scientist and prefers citations.", "The user is a baker and prefers ratios."]
    tail = lambda q: prefix.format(q=q.title()) if prefix else ""  # noqa: E731
    _write(folder, "dpo__none", [{"prompt": f"Prompt: {q}\nResponse:{tail(q)}", "response": f"plain {i}<|end_of_text|>"}
                                 for i, q in enumerate(questions)])
    _write(folder, "pt_dpo__gold-rejected", [{"prompt": f"Prompt: {q}\nPersona: {p}\nResponse:{tail(q)}", "response": f"tailored {i}"}
                                             for i, (q, p) in enumerate(zip(questions, gold_r))])
    _write(folder, "dpo__gold-rejected", [{"prompt": f"Prompt: {q} {p.replace('The user is', 'I am')}\nResponse:{tail(q)}",
                                           "response": f"inline {i}"} for i, (q, p) in enumerate(zip(questions, gold_r))])
    # Only a first-person file carries the retrieved chosen personas: they are reconstructed.
    _write(folder, "dpo__retr-chosen", [{"prompt": f"Prompt: {q} {p.replace('The user is', 'I am')}\nResponse:{tail(q)}",
                                         "response": f"inline retr {i}"} for i, (q, p) in enumerate(zip(questions, retr_c))])
    return folder


# ---- the released layout --------------------------------------------------------------------------


def test_cli_imports_the_shared_outputs_in_place(tmp_path):
    if not SHARED_DATA.exists():
        pytest.skip(f"shared paper outputs not found at {SHARED_DATA}")
    out = tmp_path / "imported"
    result = invoke("import-outputs", str(SHARED_DATA / "beavertails"), "--format", "paper", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "pe_paper_beavertails" in result.output and "499/499" in result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "models.json", "pe_paper_beavertails.yaml", "pe_paper_beavertails/test.jsonl"]  # nothing copied
    manifest = json.loads((out / "models.json").read_text())
    (task,) = manifest["tasks"]
    specs = {e["label"]: e["spec"] for e in task["models"]}
    assert specs["pt_dpo__gold-rejected"] == f"file:{(SHARED_DATA / 'beavertails' / 'pt_dpo__gold-rejected.json').resolve()}"
    by_label = {e["label"]: e for e in task["models"]}
    assert (by_label["pt_dpo__retr-rejected"]["persona_source"], by_label["pt_dpo__retr-rejected"]["split"]) == ("precomputed", "rejected")
    assert by_label["dpo__gold-chosen"]["strategy"] == "inline" and by_label["dpo__none"]["strategy"] == "baseline"
    first = task["comparisons"][0]
    assert (first["test"], first["baseline"]) == ("pt_dpo__gold-rejected", "dpo__gold-rejected")
    assert "--split rejected --persona-source gold" in first["command"] and "--baseline-strategy inline" in first["command"]
    # The imported task carries the paper's judge and the retrieved-persona columns.
    loaded = load_task(out / "pe_paper_beavertails.yaml")
    assert loaded.spec.judge.criteria["quality"].rubric == "Is the response high-quality?"
    assert loaded.load("test")[0].extra["rejected_persona_retrieved"].startswith("The user is")
    # A second identical import is a no-op, not a clash.
    again = invoke("import-outputs", str(SHARED_DATA / "beavertails"), "-o", str(out), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["tasks"][0]["task"] == "pe_paper_beavertails"


def test_small_release_reconstructs_first_person_personas(tmp_path, caplog):
    source = small_release(tmp_path / "release" / "beavertails")
    manifest = import_paper_outputs(source.parent, tmp_path / "out")
    (task,) = manifest["tasks"]
    assert task["personas_from"] == {"rejected_persona_gold": "pt_dpo__gold-rejected.json",
                                     "chosen_persona_retr": "dpo__retr-chosen.json"}
    assert "reconstructed from first-person inputs" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "out" / "pe_paper_beavertails" / "test.jsonl").read_text().splitlines()]
    assert rows[1] == {"id": "test-1", "prompt": "Human: How do I bake bread?",
                       "rejected_persona_gold": "The user prefers short recipes.",
                       "chosen_persona_retr": "The user is a baker and prefers ratios."}
    assert all(e["render_check"]["exact"] == 2 for e in task["models"])


def test_render_check_reports_a_mismatch(tmp_path):
    source = small_release(tmp_path / "release" / "hhh")
    rows = json.loads((source / "dpo__gold-rejected.json").read_text())
    rows[0]["prompt"] = rows[0]["prompt"].replace(" I am", " I'm")  # not what our inline strategy writes
    _write(source, "dpo__gold-rejected", rows)
    manifest = import_paper_outputs(source, tmp_path / "out")
    checks = {e["label"]: e["render_check"] for e in manifest["tasks"][0]["models"]}
    assert checks["dpo__gold-rejected"] == {"exact": 1, "total": 2, "first_mismatch": "test-0"}
    assert checks["pt_dpo__gold-rejected"]["exact"] == 2
    assert manifest["tasks"][0]["judge_criteria_from"] == "pe_anthropic_hhh"


def test_mnemonic_release_with_response_prefix(tmp_path):
    source = small_release(tmp_path / "mnemonic", questions=("abate", "well-being"), prefix=" {q} sounds like")
    manifest = import_paper_outputs(source, tmp_path / "out")
    task = manifest["tasks"][0]
    assert task["task"] == "pe_paper_mnemonic" and task["judge_criteria_from"] == "pe_mnemonic"
    assert {e["label"]: e["render_check"]["exact"] for e in task["models"]} == {
        "dpo__gold-rejected": 2, "dpo__none": 2, "dpo__retr-chosen": 2, "pt_dpo__gold-rejected": 2}
    loaded = load_task(tmp_path / "out" / "pe_paper_mnemonic.yaml")
    assert [e.prompt for e in loaded.load("test")] == ["abate", "well-being"]


@pytest.mark.parametrize("damage,message", [
    (lambda f: (f / "dpo__none.json").write_text('{"prompt": "x"}'), r"dpo__none\.json: expected one JSON array"),
    (lambda f: _write(f, "dpo__none", [{"prompt": "Prompt: a\nResponse:", "response": "r"}]),
     r"the files are not aligned \(their lengths differ: dpo__gold-rejected\.json: 2, dpo__none\.json: 1"),
    (lambda f: _write(f, "dpo__none", [{"prompt": "Prompt: a\nResponse:", "response": "r"}, {"prompt": "a"}]),
     r"dpo__none\.json: element 1: each element must be an object"),
    (lambda f: _write(f, "dpo__none", [{"prompt": "Q: a\nA:", "response": "r"}] * 2),
     r"dpo__none\.json: element 0: input is not of the form"),
    (lambda f: _write(f, "dpo__none", [{"prompt": f"Prompt: other {i}\nResponse:", "response": "r"} for i in range(2)]),
     r"element 0: input does not start with the item's question"),
    (lambda f: (f / "dpo__none.json").write_text("[{"), r"dpo__none\.json:1: not valid JSON"),
])
def test_bad_releases_fail_with_the_place_and_write_nothing(tmp_path, damage, message):
    source = small_release(tmp_path / "release")
    damage(source)
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message):
        import_paper_outputs(source, out)
    assert not out.exists()


def test_no_release_here_and_clashes(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("import-outputs", str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "no released outputs here" in result.output
    source = small_release(tmp_path / "release")
    out = tmp_path / "out"
    import_paper_outputs(source, out, dataset="beavertails")  # "release" names no dataset
    yaml_path = out / "pe_paper_release.yaml"
    yaml_path.write_text(yaml_path.read_text() + "# edited\n")
    with pytest.raises(UsageError, match="exists with other content .* --overwrite"):
        import_paper_outputs(source, out, dataset="beavertails")
    assert yaml_path.read_text().endswith("# edited\n")
    import_paper_outputs(source, out, overwrite=True, dataset="beavertails")
    assert not yaml_path.read_text().endswith("# edited\n")


# ---- judging the paper's own outputs ----------------------------------------------------------------


def test_run_judges_released_outputs_with_a_predictable_judge(tmp_path, scripted):
    """PT_dpo vs DPO on the rejected gold personas with a judge that prefers the longer response:
    the counts must be exactly those predicted from the released files."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared paper outputs not found at {SHARED_DATA}")
    out = tmp_path / "imported"
    import_paper_outputs(SHARED_DATA / "beavertails", out)
    folder = SHARED_DATA / "beavertails"
    limit = 12
    results = Run(RunOptions(
        task=str(out / "pe_paper_beavertails.yaml"), split="rejected", persona_source="gold",
        model=f"file:{folder / 'pt_dpo__gold-rejected.json'}", strategy="pt",
        baseline=f"file:{folder / 'dpo__gold-rejected.json'}", baseline_strategy="inline",
        judge_model="scripted:longer", limit=limit, output_dir=str(tmp_path / "run"), use_cache=False, bootstrap=50,
    ), progress=False).execute()
    test = [strip_end_markers(r["response"])[0] for r in json.loads((folder / "pt_dpo__gold-rejected.json").read_text())[:limit]]
    base = [strip_end_markers(r["response"])[0] for r in json.loads((folder / "dpo__gold-rejected.json").read_text())[:limit]]
    predicted = sum(len(t) > len(b) for t, b in zip(test, base))
    for criterion in ("personalization", "quality"):
        counts = results["metrics"]["criteria"][criterion]
        assert counts["test_wins"] == predicted and counts["ties"] == sum(len(t) == len(b) for t, b in zip(test, base))
        assert counts["test_wins"] + counts["baseline_wins"] + counts["ties"] == limit
    records = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    released_inputs = json.loads((folder / "pt_dpo__gold-rejected.json").read_text())
    for record in records:
        index = int(record["item_id"].split("-")[1])
        if record["role"] == "test":
            assert record["input"] == released_inputs[index]["prompt"] and record["response"] == test[index]
        else:
            assert record["response"] == base[index]
    # The judge saw the paper's instruction text (the prompt and the rejected gold persona).
    judge_prompts = scripted.judge_calls("longer")
    assert any("Please provide a response to the following prompt. Prompt: Prompt: "
               "My friend told me" in p and " Persona: The user is" in p for p in judge_prompts)


@pytest.mark.slow
def test_limit_4_run_over_imported_beavertails_with_the_embedded_judge(tmp_path, embedded_model_dir):
    if not SHARED_DATA.exists():
        pytest.skip(f"shared paper outputs not found at {SHARED_DATA}")
    out = tmp_path / "imported"
    imported = subprocess.run(
        [sys.executable, "-m", "persona_eval.cli", "import-outputs", str(SHARED_DATA / "beavertails"), "--format", "paper", "-o", str(out),
         "--no-judge-feedback", "--json"], capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    manifest = json.loads(imported.stdout)
    (beaver,) = manifest["tasks"]
    command = next(c["command"] for c in beaver["comparisons"] if c["test"] == "pt_dpo__gold-rejected"
                   and c["baseline"] == "dpo__gold-rejected")
    import shlex

    argv = shlex.split(command)[1:] + ["--judge-model", "hf:embedded", "--limit", "4", "--output-dir", str(tmp_path / "run"),
                                       "--json", "--quiet"]
    completed = subprocess.run([sys.executable, "-m", "persona_eval.cli", *argv], capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads(completed.stdout)
    assert results["metrics"]["items"] == 4 and results["split"] == "rejected"
    health = results["metrics"]["judge_health"]
    assert health["verdicts"] == 16 and health["unscored_verdicts"] == 0  # 4 items x 2 criteria x 2 orders
    for counts in results["metrics"]["criteria"].values():
        assert counts["test_wins"] + counts["baseline_wins"] + counts["ties"] + counts["unscored"] == 4
    assert results["identities"]["test"]["backend"] == "file"
    assert results["identities"]["judges"]
