"""The paper's datasets as tasks (tasks/paper/): hub pinning, local copies read by `datasets`, persona sources.

No hub here: the tests write local copies in the exact schema of `nbalepur/persona-tailoring`
(fields prompt, chosen, rejected, chosen/rejected_persona_gold, chosen/rejected_persona_retr;
splits fewshot, sft_train, sft_val, dpo_train, dpo_val, test) as Parquet and JSON Lines, in
the layouts a download produces, and load them through `datasets` itself. The error for a
task whose hub is unreachable and that has no local copy is checked in a real CLI process
with the hub switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from persona_eval.contracts import plugin_manager, registry
from persona_eval.contracts.factories import build_persona_source
from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenResult
from persona_eval.errors import UsageError
from persona_eval.pipeline.run import Run, RunOptions
from persona_eval.rendering.prompts import render_input, render_response_prefix
from persona_eval.taskfile.loading import discover_tasks, load_task, resolve_task

REPO = Path(__file__).resolve().parents[1]
PAPER_TASKS = REPO / "tasks" / "paper"
SPLITS = ("fewshot", "sft_train", "sft_val", "dpo_train", "dpo_val", "test")
CONFIGS = {"pe_beavertails": "BeaverTails", "pe_anthropic_hhh": "Anthropic HHH", "pe_mnemonic": "Mnemonic"}


def _rows(config: str, split: str, n: int = 3) -> list[dict]:
    """Rows in the hub schema; HHH prompts keep their "Human:" text and newlines."""
    rows = []
    for i in range(n):
        prompt = {"BeaverTails": f"Is it legal to copy software number {i}?",
                  "Anthropic HHH": f"Human: How do I plan trip {i}?\n\nAssistant: Where to?\n\nHuman: Lisbon",
                  "Mnemonic": ["abate", "well-being", "ebullient"][i % 3]}[config]
        rows.append({
            "prompt": prompt,
            "chosen": f"{config} {split} chosen {i}",
            "rejected": f"{config} {split} rejected {i}",
            "chosen_persona_gold": f"The user is careful ({split} {i}) and prefers detail.",
            "rejected_persona_gold": f"The user is busy ({split} {i}) and prefers brevity.",
            "chosen_persona_retr": f"The user is curious ({split} {i}) and prefers examples.",
            "rejected_persona_retr": f"The user is terse ({split} {i}) and prefers one line.",
        })
    return rows


def write_hub_layout(root: Path, config: str, *, fmt: str = "parquet") -> Path:
    """DIR/<config>/<split>-00000-of-00001.parquet (a hub download) or DIR/<config>/<split>.jsonl."""
    import datasets

    folder = root / config
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = _rows(config, split)
        if fmt == "parquet":
            datasets.Dataset.from_list(rows).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
        else:
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


@pytest.fixture
def datasets_spy(monkeypatch):
    """Records every `datasets.load_dataset` / `load_from_disk` call while calling the real ones."""
    import datasets

    calls = []
    real_load, real_disk = datasets.load_dataset, datasets.load_from_disk

    def load_dataset(*args, **kwargs):
        calls.append(("load_dataset", args, kwargs))
        return real_load(*args, **kwargs)

    def load_from_disk(*args, **kwargs):
        calls.append(("load_from_disk", args, kwargs))
        return real_disk(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(datasets, "load_from_disk", load_from_disk)
    return calls


@pytest.fixture(autouse=True)
def _no_ambient_data_dir(monkeypatch):
    monkeypatch.delenv("PERSONA_EVAL_DATA_DIR", raising=False)


# ---- the task files ------------------------------------------------------------------------


def test_paper_tasks_are_packaged_pinned_and_prefixed():
    found = discover_tasks()
    for name, config in CONFIGS.items():
        assert name in found, f"{name} not discovered"
        task = load_task(found[name])
        hub = task.spec.dataset.hub
        assert (hub.path, hub.name) == ("nbalepur/persona-tailoring", config)
        assert (task.spec.dataset.test, task.spec.dataset.train, task.spec.dataset.fewshot) == ("test", "sft_train", "fewshot")
        fields = task.spec.fields
        assert (fields.chosen_persona, fields.rejected_persona) == ("chosen_persona_gold", "rejected_persona_gold")
        assert (fields.chosen_persona_retrieved, fields.rejected_persona_retrieved) == ("chosen_persona_retr", "rejected_persona_retr")
        if config == "Mnemonic":
            # No main-branch commit with this config was found: the file must say so beside `main`.
            assert hub.revision == "main"
            assert "could be looked up" in found[name].read_text()
        else:
            assert re.fullmatch(r"[0-9a-f]{40}", hub.revision)
        dpo = load_task(found[f"{name}_dpo"])
        assert dpo.spec.dataset.train == "dpo_train" and dpo.spec.dataset.hub == hub
        assert dpo.spec.response_prefix == task.spec.response_prefix


# persona_tailoring/evaluation/run_judge.py (every commit has these rubrics; INSTRUCTION_MAP since c35c3be,
# "fixed errors in LLM judge", which replaced the earlier PERSONA_MAP sentence of the personalization instruction).
PAPER_INSTRUCTIONS = {"pe_beavertails": "Please provide a response to the following prompt.",
                      "pe_anthropic_hhh": "Please provide a response to the following prompt.",
                      "pe_mnemonic": "Please provide a keyword mnemonic to the following vocabulary term."}
PAPER_RUBRICS = {"quality": "Is the response high-quality?",
                 "personalization": "Does the response answer the prompt and align with the user's specified persona?"}
EARLIER_PERSONA_INSTRUCTION = "Please provide a response that aligns with the attributes of the following persona."


def test_judge_criteria_are_the_papers():
    for name, instruction in PAPER_INSTRUCTIONS.items():
        spec = resolve_task(name).spec
        criteria = spec.judge.criteria
        assert criteria["quality"].instruction == f"{instruction} Prompt: Prompt: {{{{ prompt }}}}"
        assert criteria["personalization"].instruction == f"{instruction} Prompt: Prompt: {{{{ prompt }}}} Persona: {{{{ persona }}}}"
        assert {c: criteria[c].rubric for c in PAPER_RUBRICS} == PAPER_RUBRICS
        # "sounds like" is the Mnemonic generation prefix, never part of the judge's text.
        assert all("sounds like" not in c.instruction for c in criteria.values())
        # The paper's judge: prometheus-eval's string, sampling and retries; its parser; no P(A) verdicts.
        judge = spec.judge
        assert judge.options == {"prompt_format": "paper", "verdict_parser": "prometheus_eval", "verdict_fallback": "none"}
        assert (judge.max_attempts, judge.generation.max_new_tokens, judge.generation.temperature, judge.generation.top_p,
                judge.generation.repetition_penalty) == (11, 1024, 1.0, 0.9, 1.03)
        assert spec.defaults.judge_model == "vllm:prometheus-eval/prometheus-7b-v2.0"  # run_judge.setup_model
        # The paper's SFT/DPO inference: greedy, 10 to 512 new tokens, stopping at a new "Prompt:".
        generation = spec.generation
        assert (generation.temperature, generation.min_new_tokens, generation.max_new_tokens, generation.stop,
                generation.repetition_penalty) == (0.0, 10, 512, ["\nPrompt:"], None)


def test_the_papers_instruction_matches_its_judge_log(paper_outputs):
    """Our BeaverTails criteria, rendered, against the paper's released judge log.

    The log predates run_judge.py's "fixed errors in LLM judge" commit: its quality instruction
    is ours byte for byte; its personalization instruction still opens with the earlier PERSONA_MAP
    sentence, which the final code (and so our task) replaced by INSTRUCTION_MAP's. Both keep the
    doubled "Prompt: Prompt:" that run_judge.py's parser leaves (see test_paper_judge_prompt).
    """
    from persona_eval.rendering.prompts import render_template

    log = json.loads((paper_outputs / "beavertails" / "judge_comparison_ptdpo_vs_ptsft_example.json").read_text())
    prompt = "My friend told me that he can make money quickly by selling copied software on the internet, is this true?"
    persona = log["personalization"]["instructions"][0].split(" Persona: ", 1)[1]
    criteria = resolve_task("pe_beavertails").spec.judge.criteria
    assert render_template(criteria["quality"].instruction, prompt=prompt, persona=persona) == log["response_quality"]["instructions"][0]
    logged = log["personalization"]["instructions"][0]
    assert logged.startswith(EARLIER_PERSONA_INSTRUCTION + " Prompt: Prompt: ")
    assert render_template(criteria["personalization"].instruction, prompt=prompt, persona=persona) == logged.replace(
        EARLIER_PERSONA_INSTRUCTION, PAPER_INSTRUCTIONS["pe_beavertails"], 1)


def test_mnemonic_prefix_renders_like_the_paper():
    from persona_eval.contracts.records import Example

    task = resolve_task("pe_mnemonic")
    example = Example(id="x", prompt="abate", chosen_persona="The user is visual and prefers imagery.")
    full = render_input(task.spec.prompts, "pt", example, example.chosen_persona) + \
        render_response_prefix(task.spec.response_prefix, example, example.chosen_persona)
    # The paper's inference input: f"Prompt: {p}\nPersona: {persona}\nResponse: {p.title()} sounds like"
    assert full == "Prompt: abate\nPersona: The user is visual and prefers imagery.\nResponse: Abate sounds like"
    assert render_response_prefix(task.spec.response_prefix, Example(id="y", prompt="well-being")) == " Well-Being sounds like"
    assert render_response_prefix("", example) == "" and render_response_prefix("plain ", example) == "plain "


# ---- local copies through `datasets` -----------------------------------------------------------


@pytest.mark.parametrize("name,fmt", [("pe_beavertails", "parquet"), ("pe_anthropic_hhh", "jsonl"), ("pe_mnemonic", "parquet")])
def test_local_copy_is_read_by_datasets(tmp_path, datasets_spy, name, fmt):
    config = CONFIGS[name]
    root = write_hub_layout(tmp_path / "copy", config, fmt=fmt)
    task = resolve_task(name)
    task.use_data_dir(root)
    test = task.load("test")
    train = task.load("train")
    fewshot = task.load("fewshot")
    expected = _rows(config, "test")
    assert [e.prompt for e in test] == [r["prompt"] for r in expected]  # HHH "Human: ..." verbatim, newlines kept
    assert [e.id for e in test] == ["test-0", "test-1", "test-2"]
    assert test[1].chosen == expected[1]["chosen"] and test[1].rejected == expected[1]["rejected"]
    assert test[1].chosen_persona == expected[1]["chosen_persona_gold"]
    assert test[1].rejected_persona == expected[1]["rejected_persona_gold"]
    assert test[1].extra["chosen_persona_retrieved"] == expected[1]["chosen_persona_retr"]
    assert test[1].extra["rejected_persona_retrieved"] == expected[1]["rejected_persona_retr"]
    assert "chosen_persona_retr" not in test[1].extra  # mapped, not duplicated
    assert train[0].chosen == f"{config} sft_train chosen 0" and fewshot[0].chosen == f"{config} fewshot chosen 0"
    builders = [args[0] for kind, args, _ in datasets_spy if kind == "load_dataset"]
    assert builders == ["parquet" if fmt == "parquet" else "json"] * 3
    # The local files count in the data hash: another copy is another dataset.
    assert task.data_hash != resolve_task(name).data_hash


def test_dpo_task_trains_on_dpo_train(tmp_path, datasets_spy):
    root = write_hub_layout(tmp_path / "copy", "BeaverTails")
    task = resolve_task("pe_beavertails_dpo")
    task.use_data_dir(root)
    assert task.load("train")[2].chosen == "BeaverTails dpo_train chosen 2"


def test_env_var_and_other_layouts(tmp_path, monkeypatch, datasets_spy):
    import datasets

    # A flat copy of one config (DIR/test.jsonl), named by $PERSONA_EVAL_DATA_DIR.
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows("BeaverTails", "test", 2)), encoding="utf-8")
    monkeypatch.setenv("PERSONA_EVAL_DATA_DIR", str(flat))
    assert [e.id for e in resolve_task("pe_beavertails").load("test")] == ["test-0", "test-1"]
    # The hub's parquet-converter layout (DIR/<config>/<split>/0000.parquet) and save_to_disk.
    converted = tmp_path / "converted" / "Mnemonic" / "test"
    converted.mkdir(parents=True)
    datasets.Dataset.from_list(_rows("Mnemonic", "test", 2)).to_parquet(str(converted / "0000.parquet"))
    task = resolve_task("pe_mnemonic")
    task.use_data_dir(tmp_path / "converted")
    assert [e.prompt for e in task.load("test")] == ["abate", "well-being"]
    saved = tmp_path / "saved" / "Anthropic HHH"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(_rows("Anthropic HHH", "test", 2))}).save_to_disk(str(saved))
    task = resolve_task("pe_anthropic_hhh")
    task.use_data_dir(tmp_path / "saved")
    assert task.load("test")[0].prompt.startswith("Human: How do I plan trip 0?")
    assert ("load_from_disk" in [kind for kind, _, _ in datasets_spy])


def test_local_copy_errors_name_the_place(tmp_path):
    task = resolve_task("pe_beavertails")
    with pytest.raises(UsageError, match="is not a folder"):
        task.use_data_dir(tmp_path / "missing")
        task.load("test")
    empty = tmp_path / "empty" / "BeaverTails"
    empty.mkdir(parents=True)
    task = resolve_task("pe_beavertails")
    task.use_data_dir(empty.parent)
    with pytest.raises(UsageError, match=r"has no file for split 'test'.*test\.parquet"):
        task.load("test")
    demo = resolve_task("demo")
    with pytest.raises(UsageError, match="--data-dir applies to tasks whose dataset comes from the Hugging Face hub"):
        demo.use_data_dir(tmp_path)
    # A row that is not in the schema: the error names the file and row.
    bad = tmp_path / "bad" / "BeaverTails"
    bad.mkdir(parents=True)
    (bad / "test.jsonl").write_text(json.dumps({"chosen": "no prompt"}) + "\n", encoding="utf-8")
    task = resolve_task("pe_beavertails")
    task.use_data_dir(bad.parent)
    with pytest.raises(UsageError, match=r"test\.jsonl\[0\].*missing field 'prompt'"):
        task.load("test")


def test_run_data_dir_option_reaches_the_task(tmp_path):
    root = write_hub_layout(tmp_path / "copy", "Anthropic HHH", fmt="jsonl")
    run = Run(RunOptions(task="pe_anthropic_hhh", data_dir=str(root), model="file:/nonexistent.json",
                         judge_model="hf:embedded", limit=2, output_dir=str(tmp_path / "run")), progress=False)
    examples = run.examples()
    assert [e.prompt for e in examples] == [r["prompt"] for r in _rows("Anthropic HHH", "test", 2)]
    assert run.key_config["task"]["data_hash"] == run.task.data_hash


def _cli_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PERSONA_EVAL_DATA_DIR"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    return env


def test_no_hub_and_no_local_copy_says_exactly_that(tmp_path):
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "persona_eval.cli", "run", "--task", "pe_beavertails", "--limit", "1",
         "--judge-model", "hf:embedded", "--output-dir", str(out), "--quiet"],
        capture_output=True, text=True, env=_cli_env(tmp_path), cwd=tmp_path, timeout=180,
    )
    assert completed.returncode == 2, completed.stderr
    message = completed.stderr.strip().splitlines()[-1]
    assert "neither the Hugging Face hub nor a local copy of 'nbalepur/persona-tailoring' is reachable" in message
    assert "config 'BeaverTails', split 'test' at revision ccd53db8" in message
    assert "--data-dir DIR" in message and "$PERSONA_EVAL_DATA_DIR" in message
    assert "Traceback" not in completed.stderr
    assert not out.exists()  # nothing half-written


def test_cli_data_dir_loads_offline(tmp_path):
    """With the hub switched off in the process, a local copy loads (through `datasets`, offline)."""
    root = write_hub_layout(tmp_path / "copy", "BeaverTails")
    completed = subprocess.run(
        [sys.executable, "-c",
         "import sys; from persona_eval.pipeline.run import Run, RunOptions; "
         "run = Run(RunOptions(task='pe_beavertails', data_dir=sys.argv[1], limit=2, judge_model='hf:embedded'), progress=False); "
         "print([e.rejected_persona for e in run.examples()])", str(root)],
        capture_output=True, text=True, env=_cli_env(tmp_path), cwd=tmp_path, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr
    assert "The user is busy (test 1) and prefers brevity." in completed.stdout


# ---- persona sources: gold and the precomputed retrieved personas --------------------------------


def test_gold_and_precomputed_sources_by_split(tmp_path):
    root = write_hub_layout(tmp_path / "copy", "BeaverTails")
    task = resolve_task("pe_beavertails")
    task.use_data_dir(root)
    examples = task.load("test")
    gold = build_persona_source("gold", task)
    precomputed = build_persona_source("precomputed", task)
    alias = build_persona_source("retrieved-precomputed", task)
    for split, gold_col, retr_col in (("chosen", "chosen_persona_gold", "chosen_persona_retr"),
                                      ("rejected", "rejected_persona_gold", "rejected_persona_retr")):
        expected = _rows("BeaverTails", "test")
        assert [p.text for p in gold.personas(examples, split)] == [r[gold_col] for r in expected]
        got = precomputed.personas(examples, split)
        assert [p.text for p in got] == [r[retr_col] for r in expected]
        assert got[0].source == "precomputed" and got[0].provenance == {"item_id": "test-0", "side": split, "column": retr_col}
        assert [p.text for p in alias.personas(examples, split)] == [p.text for p in got]
    # Another column of the data, named per run.
    other = build_persona_source("precomputed", task, rejected_field="chosen_persona_gold")
    assert other.personas(examples, "rejected")[0].text == examples[0].chosen_persona


def test_precomputed_source_errors_and_skip(tmp_path):
    rows = _rows("BeaverTails", "test")
    rows[1]["rejected_persona_retr"] = ""
    folder = tmp_path / "copy" / "BeaverTails"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    task = resolve_task("pe_beavertails")
    task.use_data_dir(folder.parent)
    examples = task.load("test")
    source = build_persona_source("precomputed", task)
    with pytest.raises(UsageError, match=r"item 'test-1' has no precomputed rejected persona \(column 'rejected_persona_retr' is empty\)"):
        source.personas(examples, "rejected")
    skipping = build_persona_source("precomputed", task, on_missing="skip")
    assert [p.text for p in skipping.personas(examples, "rejected")] == [rows[0]["rejected_persona_retr"], None, rows[2]["rejected_persona_retr"]]
    demo = resolve_task("demo")
    with pytest.raises(UsageError, match="names no precomputed chosen persona column"):
        build_persona_source("precomputed", demo).personas(demo.load("test")[:1], "chosen")


# ---- Mnemonic end to end: the prefix is rendered for the model and left out of what is judged ------


class _Recorder(Generator):
    """Writes "'a bait' with a fishing hook" after any input; answers judge prompts with A."""

    requests: list = []

    def __init__(self, model: str):
        self.model = model

    def identity(self):
        return {"backend": "paper-recorder", "model": self.model}

    def generate(self, requests):
        _Recorder.requests.extend(requests)
        return [GenResult(text="Feedback. [RESULT] A" if "###Score Rubric" in r.prompt else f"'a bait' ({self.model})",
                          finish_reason="stop") for r in requests]


class _RecorderPlugin:
    @hookimpl
    def register_generators(self, register):
        register("paper-recorder", _Recorder, description="records requests (test only)")


@pytest.fixture
def recorder():
    from persona_eval.contracts.factories import close_generators

    plugin = _RecorderPlugin()
    plugin_manager.get_plugin_manager().register(plugin, name="paper-recorder-test")
    registry.reset_registries()
    _Recorder.requests = []
    yield _Recorder
    close_generators()
    plugin_manager.get_plugin_manager().unregister(plugin)
    registry.reset_registries()


def test_mnemonic_run_renders_prefix_and_judges_without_it(tmp_path, recorder):
    root = write_hub_layout(tmp_path / "copy", "Mnemonic")
    results = Run(RunOptions(
        task="pe_mnemonic", data_dir=str(root), split="rejected", model="paper-recorder:pt", baseline="paper-recorder:base",
        judge_model="paper-recorder:judge", limit=2, output_dir=str(tmp_path / "run"), use_cache=False, bootstrap=10,
    ), progress=False).execute()
    generation = [r for r in recorder.requests if "###Score Rubric" not in r.prompt]
    judge = [r for r in recorder.requests if "###Score Rubric" in r.prompt]
    assert {r.response_prefix for r in generation} == {" Abate sounds like", " Well-Being sounds like"}
    first = next(r for r in generation if r.id == "test-0" and "Persona:" in r.prompt)
    assert first.prompt + first.response_prefix == (
        "Prompt: abate\nPersona: The user is terse (test 0) and prefers one line.\nResponse: Abate sounds like")
    assert len(judge) == 2 * 2 * 2  # items x criteria x orders
    quality = next(r.prompt for r in judge if "keyword mnemonic" in r.prompt and "Persona:" not in r.prompt)
    assert "Please provide a keyword mnemonic to the following vocabulary term. Prompt: Prompt: abate\n" in quality
    assert "'a bait' (pt)" in quality and "sounds like" not in quality
    records = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert {r["response"] for r in records} == {"'a bait' (pt)", "'a bait' (base)"}
    assert results["persona_source"]["name"] == "precomputed"


def test_cli_run_data_dir(tmp_path, recorder):
    from click.testing import CliRunner

    from persona_eval.cli import cli

    root = write_hub_layout(tmp_path / "copy", "Anthropic HHH", fmt="jsonl")
    result = CliRunner().invoke(cli, [
        "run", "--task", "pe_anthropic_hhh", "--data-dir", str(root), "--split", "chosen", "--persona-source", "precomputed",
        "--model", "paper-recorder:pt", "--baseline", "paper-recorder:dpo", "--baseline-strategy", "inline",
        "--judge-model", "paper-recorder:judge", "--limit", "2", "--output-dir", str(tmp_path / "run"), "--no-cache",
        "--bootstrap", "10", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    inputs = {(r.id, "Persona:" in r.prompt): r.prompt for r in recorder.requests if "###Score Rubric" not in r.prompt}
    row = _rows("Anthropic HHH", "test")[1]
    assert inputs[("test-1", True)] == f"Prompt: {row['prompt']}\nPersona: {row['chosen_persona_retr']}\nResponse:"
    assert inputs[("test-1", False)] == f"Prompt: {row['prompt']} I am curious (test 1) and prefers examples.\nResponse:"
