"""`persona-eval show-prompt`: the exact input of the test model, the baseline and the judge, on stdout alone.

Expected texts are built independently where possible: the embedded model's chat template
applied by its own tokenizer, prometheus-eval's relative-grading template, the released
paper inputs, and the `input` a real run recorded. Runs use the scripted backend
(`judging_support`) or `file:` outputs, so no test here needs model weights; one test makes
loading them an error.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_support import imported_after, invoke

REPO = Path(__file__).resolve().parents[1]
DEMO_TEST = REPO / "tasks" / "demo" / "data" / "test.jsonl"
PAPER_RUBRIC = "Does the response answer the prompt and align with the user's specified persona?"


def demo_items() -> list[dict]:
    return [json.loads(line) for line in DEMO_TEST.read_text(encoding="utf-8").splitlines() if line.strip()]


def show(*args: str) -> subprocess.CompletedProcess:
    return invoke("show-prompt", *args)


def chat(tokenizer_dir: Path, user: str, system: str | None = None) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ---- test and baseline inputs ------------------------------------------------------------------


def test_demo_test_role_is_the_chat_template_of_the_pt_input(embedded_model_dir):
    first = demo_items()[0]
    result = show("--task", "demo", "--role", "test")
    assert result.returncode == 0, result.stderr
    user = f"Prompt: {first['prompt']}\nPersona: {first['rejected_persona']}\nResponse:"
    expected = chat(embedded_model_dir, user)
    # The template ends with a newline ("<|im_start|>assistant\n"): nothing is added after it.
    assert expected.endswith("assistant\n")
    assert result.stdout == expected


def test_baseline_role_and_chosen_split_and_item(embedded_model_dir):
    second = demo_items()[1]
    result = show("--task", "demo", "--role", "baseline", "--split", "chosen", "--item", second["id"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == chat(embedded_model_dir, f"Prompt: {second['prompt']}\nResponse:")
    chosen = show("--task", "demo", "--role", "test", "--split", "chosen", "--item", second["id"])
    assert f"Persona: {second['chosen_persona']}\nResponse:" in chosen.stdout


def test_hf_input_matches_what_generate_renders_and_loads_no_weights(monkeypatch, embedded_model_dir):
    from persona_eval.contracts.factories import close_generators
    from persona_eval.contracts.records import GenRequest
    from persona_eval.plugins.generators.hf import HFGenerator

    request = GenRequest(id="x", prompt="Hello?", system="Be brief.", response_prefix="Sure:")
    close_generators()
    loaded = HFGenerator("embedded")
    full = loaded.render(request)[0]  # the path `generate` takes, weights loaded

    def no_weights(self):
        raise AssertionError("show-prompt loaded the model")

    monkeypatch.setattr(HFGenerator, "_load", no_weights)
    assert HFGenerator("embedded").render_input(request) == full == chat(embedded_model_dir, "Hello?", "Be brief.") + "Sure:"
    close_generators()
    result = show("--task", "demo", "--role", "test")
    assert result.returncode == 0, result.stderr


def test_vllm_renders_like_hf_without_an_engine(embedded_model_dir):
    from persona_eval.contracts.records import GenRequest
    from persona_eval.plugins.generators.hf import HFGenerator
    from persona_eval.plugins.generators.vllm import VLLMGenerator

    request = GenRequest(id="x", prompt="Hello?", system="Be brief.")
    generator = VLLMGenerator("embedded")
    assert generator.render_input(request) == HFGenerator("embedded").render_input(request)
    assert generator._llm is None
    plain = VLLMGenerator("embedded", chat_template=False)
    assert plain.render_input(request) == "Be brief.\n\nHello?"


def test_openai_input_is_the_request_bodys_messages():
    from persona_eval.contracts.records import GenRequest
    from persona_eval.plugins.generators.openai import OpenAIGenerator

    request = GenRequest(id="x", prompt="Wie geht's? ✓", system="S", response_prefix="Gut")
    generator = OpenAIGenerator("m")
    text = generator.render_input(request)
    assert json.loads(text) == generator.body(request)["messages"]
    assert text == json.dumps(generator.body(request)["messages"], indent=2, ensure_ascii=False)
    append = OpenAIGenerator("m", prefill="append")
    assert json.loads(append.render_input(request))[-1] == {"role": "user", "content": "Wie geht's? ✓Gut"}


# ---- the judge ---------------------------------------------------------------------------------


def test_judge_without_a_run_shows_placeholders_in_position_order():
    from prometheus_eval.prompts import REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF

    first = demo_items()[0]
    messages = {}
    for order in ("test_first", "baseline_first"):
        result = show("--task", "demo", "--judge-model", "openai:prometheus", "--judge-option", "feedback=true",
                      "--order", order, "--criterion", "quality")
        assert result.returncode == 0, result.stderr
        messages[order] = json.loads(result.stdout)
    # Position A is A whichever response fills it: without a run the two orders read the same.
    assert messages["test_first"] == messages["baseline_first"]
    system, user = messages["test_first"]
    assert system == {"role": "system", "content": REL_SYSTEM_PROMPT}
    assert user["role"] == "user"
    content = user["content"]
    assert content.index("###Response A:\n{response_A}\n") < content.index("###Response B:\n{response_B}\n")
    head, tail = RELATIVE_PROMPT_WO_REF.split("{instruction}")
    assert content.startswith(head) and first["prompt"] in content
    assert content.endswith(tail.split("{rubric}")[-1])


def test_demo_judge_shows_its_verdict_probe_through_the_chat_template(monkeypatch, embedded_model_dir):
    from prometheus_eval.prompts import REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF

    from persona_eval.contracts.factories import close_generators
    from persona_eval.plugins.generators.hf import HFGenerator
    from persona_eval.rendering.prompts import render_template
    from persona_eval.taskfile.loading import resolve_task

    def no_weights(self):
        raise AssertionError("show-prompt loaded the model")

    close_generators()
    monkeypatch.setattr(HFGenerator, "_load", no_weights)
    first = demo_items()[0]
    result = show("--task", "demo")  # the judge on hf:embedded, personalization, test first
    assert result.returncode == 0, result.stderr
    criterion = resolve_task("demo").spec.judge.criteria["personalization"]
    user = RELATIVE_PROMPT_WO_REF.format(
        instruction=render_template(criterion.instruction, prompt=first["prompt"], persona=first["rejected_persona"]),
        response_A="{response_A}", response_B="{response_B}", rubric=criterion.rubric)
    # The demo's judge writes nothing (feedback=false): its first ask reads P(A) right after "[RESULT] ".
    assert result.stdout == chat(embedded_model_dir, user, REL_SYSTEM_PROMPT) + "[RESULT] \n"


def test_judge_with_a_run_shows_its_recorded_responses(tmp_path, scripted):
    from prometheus_eval.prompts import RELATIVE_PROMPT_WO_REF

    from persona_eval.rendering.prompts import render_template
    from persona_eval.taskfile.loading import resolve_task

    run_dir = tmp_path / "run"
    made = invoke("run", "--task", "demo", "--limit", "2", "--model", "scripted:writer", "--judge-model", "scripted:longer",
                  "--output-dir", run_dir, "--quiet", "--no-cache")
    assert made.returncode == 0, made.stderr
    records = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    item = records[-1]["item_id"]
    by_role = {r["role"]: r for r in records if r["item_id"] == item}
    assert by_role["test"]["response"] != by_role["baseline"]["response"]

    # feedback=true: the written request (the demo's verdict-only judge would show its probe).
    result = show("--run", run_dir, "--item", item, "--order", "baseline_first", "--criterion", "personalization",
                  "--judge-model", "openai:prometheus", "--judge-option", "feedback=true")
    assert result.returncode == 0, result.stderr
    (_, user) = json.loads(result.stdout)
    criterion = resolve_task("demo").spec.judge.criteria["personalization"]
    instruction = render_template(criterion.instruction, prompt=by_role["test"]["prompt"], persona=by_role["test"]["persona"])
    assert user["content"] == RELATIVE_PROMPT_WO_REF.format(
        instruction=instruction, response_A=by_role["baseline"]["response"], response_B=by_role["test"]["response"],
        rubric=criterion.rubric)

    # The test model's input is the one the run recorded (the scripted backend does not render: the request's text).
    shown = show("--run", run_dir, "--item", item, "--role", "test", "-n")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == by_role["test"]["input"]
    assert show("--run", run_dir, "--persona", "The user is anyone.").returncode == 2
    wrong = show("--run", run_dir, "--task", "pe_beavertails")
    assert wrong.returncode == 2 and "leave --task out" in wrong.stderr


# ---- the imported paper task ----------------------------------------------------------------------


@pytest.fixture
def paper_task(tmp_path, paper_outputs) -> Path:
    from persona_eval.plugins.commands.import_outputs import import_paper_outputs

    out = tmp_path / "imported"
    import_paper_outputs(paper_outputs, out)
    return out


def test_paper_test_input_is_the_released_input(paper_task, paper_outputs):
    released = paper_outputs / "beavertails" / "pt_dpo__gold-rejected.json"
    result = show("--task", "pe_paper_beavertails", "--include-path", paper_task, "--role", "test",
                  "--model", f"file:{released}", "-n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == json.loads(released.read_text(encoding="utf-8"))[0]["prompt"]


def test_paper_judge_prompt_is_the_fastchat_string_and_imports_no_model_library(paper_task):
    from fastchat.conversation import get_conv_template
    from prometheus_eval.prompts import REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF

    from persona_eval.rendering.prompts import render_template
    from persona_eval.taskfile.loading import load_task

    completed, heavy = imported_after(["show-prompt", "--task", "pe_paper_beavertails", "--include-path", str(paper_task),
                                       "--criterion", "personalization"], cwd=REPO)
    assert completed.returncode == 0, completed.stderr
    text = completed.stdout
    assert text.startswith("[INST]") and text.endswith("[/INST]\n")
    assert PAPER_RUBRIC in text and "{response_A}" in text and "{response_B}" in text
    assert heavy == []  # neither torch nor a tokenizer: the vllm judge's string needs no model file
    # Byte for byte the string prometheus-eval builds with fastchat's "mistral" conversation.
    task = load_task(paper_task / "pe_paper_beavertails.yaml")
    first = task.load("test")[0]
    criterion = task.spec.judge.criteria["personalization"]
    user = RELATIVE_PROMPT_WO_REF.format(
        instruction=render_template(criterion.instruction, prompt=first.prompt, persona=first.rejected_persona),
        response_A="{response_A}", response_B="{response_B}", rubric=criterion.rubric)
    conversation = get_conv_template("mistral")
    conversation.set_system_message(REL_SYSTEM_PROMPT)
    conversation.append_message(conversation.roles[0], user)
    conversation.append_message(conversation.roles[1], None)
    assert text == conversation.get_prompt() + "\n"


def test_an_openai_judge_prompt_imports_no_model_library():
    completed, heavy = imported_after(["show-prompt", "--task", "demo", "--judge-model", "openai:prometheus",
                                       "--judge-option", "feedback=true"], cwd=REPO)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)[0]["role"] == "system"  # stdout is the prompt alone
    assert heavy == []


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--item", "nope"], "demo-test-001"),
    (["--criterion", "style"], "personalization, quality"),
    (["--role", "critic"], "'test', 'baseline', 'judge'"),
    (["--order", "random"], "'test_first', 'baseline_first'"),
    (["--split", "neutral"], "chosen, rejected"),
])
def test_bad_choices_are_one_line_errors_listing_the_valid_ones(args, says):
    result = show("--task", "demo", "--judge-model", "openai:prometheus", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and says in lines[0], result.stderr
