"""The paper tasks' Prometheus judge sends what the paper's code sent, byte for byte.

The expected inputs are built by prometheus-eval itself: its `PrometheusEval.relative_grade` on its
own `VLLM` wrapper (vLLM is not installed here: a stand-in `vllm` module records what the wrapper
hands the engine), which turns the system prompt and the filled relative-grading template into one
string through fastchat's "mistral" conversation. The instructions, rubrics and response cleaning
fed to it are those of the paper's `persona_tailoring/evaluation/run_judge.py` (its strings, and its
parsing of the model inputs its `prompt_loader.py` built), written out below. Our side is the real
pipeline: the packaged paper task, `pair_requests`, `build_judge` and the judge's `compare`, on a
recording backend that takes raw prompts (as hf and vllm do) or chat messages only (as openai).
"""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import pytest

from persona_eval.contracts import plugin_manager, registry
from persona_eval.contracts.factories import build_judge, close_generators
from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenResult
from persona_eval.pipeline.items import JudgeItem
from persona_eval.pipeline.judge import pair_requests
from persona_eval.rendering.chat import render_request
from persona_eval.taskfile.loading import resolve_task

# ---- the paper's side: run_judge.py's strings and parsing, prompt_loader.py's inputs ----------

INSTRUCTION_MAP = {
    "BeaverTails": "Please provide a response to the following prompt.",
    "Anthropic HHH": "Please provide a response to the following prompt.",
    "Mnemonic": "Please provide a keyword mnemonic to the following vocabulary term.",
}
RUBRICS = {
    "quality": "Is the response high-quality?",
    "personalization": "Does the response answer the prompt and align with the user's specified persona?",
}
TASKS = {"BeaverTails": "pe_beavertails", "Anthropic HHH": "pe_anthropic_hhh", "Mnemonic": "pe_mnemonic"}
ITEMS = {
    "BeaverTails": ("My friend told me that he can make money quickly by selling copied software on the internet, is this true?",
                    "The user is morally aware and prefers guidance that acknowledges the complexity of a situation."),
    "Anthropic HHH": ("Human: How do I plan a trip to Lisbon?\n\nAssistant: When are you going?\n\nHuman: In May, for a week.",
                      "The user is a budget traveller who prefers day-by-day plans."),
    "Mnemonic": ("abate", "The user is a visual learner and prefers vivid imagery."),
}
# As generated: the end-of-text marker, a stop on "Prompt:" kept in the text, a "Prompt:" inside.
RESPONSES = {"test": "  Start early, Prompt: book ahead.<|end_of_text|>", "baseline": "It depends.\nPrompt:"}


def paper_model_input(dataset: str, question: str, persona: str | None) -> str:
    """prompt_loader.create_test_exemplar: the input the paper's PT model (persona) or baseline (None) got."""
    text = f"Prompt: {question}"
    if persona is not None:
        text += f"\nPersona: {persona}"
    text += "\nResponse:"
    if dataset == "Mnemonic":
        text += f" {question.title()} sounds like"
    return text


def paper_parse(model_input: str) -> tuple[str, str]:
    """run_judge.parse_json for one row: (prompt, persona) as it cut them out of the model input."""
    p = model_input.split("\nPrompt:")[-1]
    if "Persona:" in model_input:
        return p[: p.index("Persona:")].strip(), p[p.index("Persona: ") + len("Persona: "): p.index("Response:")].strip()
    return p[: p.index("Response:")].strip(), ""


def paper_clean(response: str) -> str:
    return response.replace("Prompt:", "").replace("<|end_of_text|>", "").strip()


def paper_pairs(dataset: str, criterion: str) -> list[tuple[str, str, str, bool]]:
    """(instruction, response A, response B, is_swapped) for one item, in run_judge.py's two orders."""
    question, persona = ITEMS[dataset]
    p_base, _ = paper_parse(paper_model_input(dataset, question, None))
    _, persona_test = paper_parse(paper_model_input(dataset, question, persona))
    instruction = INSTRUCTION_MAP[dataset] + " Prompt: " + p_base
    if criterion == "personalization":
        instruction += " Persona: " + persona_test
    base, test = RESPONSES["baseline"], RESPONSES["test"]
    return [(instruction, paper_clean(a), paper_clean(b), swapped) for a, b, swapped in ((base, test, False), (test, base, True))]


class _FakeEngine:
    """Stands in for vllm.LLM under prometheus-eval's VLLM wrapper: records what the wrapper hands it."""

    reply = "Feedback: fine. [RESULT] A"

    def __init__(self, model, **kwargs):
        self.calls: list[tuple[list[str], dict]] = []

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((list(prompts), params.kwargs))
        return [SimpleNamespace(outputs=[SimpleNamespace(text=self.reply)]) for _ in prompts]


class _FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def package():
    """prometheus-eval's own judge on its own VLLM wrapper, over a recording stand-in engine."""
    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = _FakeEngine, _FakeSamplingParams
    saved = {name: sys.modules.get(name) for name in ("vllm", "prometheus_eval.vllm")}
    sys.modules["vllm"] = fake
    sys.modules.pop("prometheus_eval.vllm", None)
    try:
        from prometheus_eval.judge import PrometheusEval
        from prometheus_eval.vllm import VLLM

        model = VLLM(model="prometheus-eval/prometheus-7b-v2.0")
        yield PrometheusEval(model=model), model.model
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def package_inputs(judge, engine, dataset: str, criterion: str) -> list[str]:
    """The strings prometheus-eval hands vLLM for run_judge.py's two orders of one item."""
    pairs = paper_pairs(dataset, criterion)
    engine.calls.clear()
    with pytest.warns(UserWarning):  # "Reference answer was not provided": the paper passed None too
        judge.relative_grade(instructions=[p[0] for p in pairs], responses_A=[p[1] for p in pairs],
                             responses_B=[p[2] for p in pairs], rubric=RUBRICS[criterion], reference_answers=None)
    (prompts, _), = engine.calls
    return prompts


# ---- our side: recording backends and the real pipeline -----------------------------------------


class _Recording(Generator):
    requests: list = []
    replies: list[str] = []

    def __init__(self, model: str):
        self.model = model

    def identity(self):
        return {"backend": type(self).__name__, "model": self.model}

    def generate(self, requests):
        _Recording.requests.extend(requests)
        reply = _Recording.replies.pop(0) if _Recording.replies else "Feedback: fine. [RESULT] A"
        return [GenResult(text=reply, finish_reason="stop") for _ in requests]


class RawRecorder(_Recording):
    accepts_raw_prompt = True


class ChatRecorder(_Recording):
    accepts_raw_prompt = False


class _Plugin:
    @hookimpl
    def register_generators(self, register):
        register("raw-recorder", RawRecorder, description="records requests, takes raw prompts (test only)")
        register("chat-recorder", ChatRecorder, description="records requests, chat only (test only)")


@pytest.fixture
def recorders():
    plugin = _Plugin()
    plugin_manager.get_plugin_manager().register(plugin, name="paper-judge-prompt-test")
    registry.reset_registries()
    _Recording.requests, _Recording.replies = [], []
    yield _Recording
    close_generators()
    plugin_manager.get_plugin_manager().unregister(plugin)
    registry.reset_registries()


def our_pairs(dataset: str, criterion: str):
    task = resolve_task(TASKS[dataset])
    question, persona = ITEMS[dataset]
    items = [JudgeItem(id="i0", prompt=question, persona=persona)]
    responses = {("i0", "test"): RESPONSES["test"], ("i0", "baseline"): RESPONSES["baseline"]}
    pairs = {key["order"]: pair for key, pair in pair_requests(task, items, responses) if key["criterion"] == criterion}
    # run_judge.py's first order has the baseline as A (is_swapped False), its second the test model.
    return task, [pairs["baseline_first"], pairs["test_first"]]


@pytest.mark.parametrize("criterion", ["personalization", "quality"])
@pytest.mark.parametrize("dataset", sorted(TASKS))
def test_raw_backend_gets_the_packages_mistral_string(package, recorders, dataset, criterion):
    judge_pkg, engine = package
    expected = package_inputs(judge_pkg, engine, dataset, criterion)
    task, pairs = our_pairs(dataset, criterion)
    judge = build_judge("prometheus", "raw-recorder:prometheus", task, 0)
    for pair, want in zip(pairs, expected):
        recorders.requests.clear()
        judge.compare([pair])
        (sent,) = recorders.requests
        assert sent.raw is True and sent.system is None and sent.response_prefix == ""
        assert render_request(None, sent) == (want, False)  # the backend's input: the string as it is
        assert sent.prompt == want
        assert judge.first_request(pair) == sent
        assert want.startswith("[INST] ") and want.endswith(" [/INST]")
        assert RUBRICS[criterion] in want and "sounds like" not in want


@pytest.mark.parametrize("dataset", sorted(TASKS))
def test_chat_backend_gets_the_packages_messages(package, recorders, dataset):
    """prometheus-eval's API path sends [system, user] messages; ours sends the same system and user text."""
    from prometheus_eval.prompts import REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF

    from persona_eval.plugins.generators.openai import OpenAIGenerator

    endpoint = OpenAIGenerator("prometheus", base_url="http://127.0.0.1:9/v1")  # builds request bodies; no call made
    for criterion in RUBRICS:
        task, pairs = our_pairs(dataset, criterion)
        judge = build_judge("prometheus", "chat-recorder:prometheus", task, 0)
        for pair, (instruction, a, b, _) in zip(pairs, paper_pairs(dataset, criterion)):
            recorders.requests.clear()
            judge.compare([pair])
            (sent,) = recorders.requests
            expected = [{"role": "system", "content": REL_SYSTEM_PROMPT},
                        {"role": "user", "content": RELATIVE_PROMPT_WO_REF.format(
                            instruction=instruction, response_A=a, response_B=b, rubric=RUBRICS[criterion])}]
            assert sent.raw is False and endpoint.messages(sent) == expected
    # The same two messages are what prometheus-eval builds for a non-vLLM model (litellm, mock).
    from prometheus_eval.judge import PrometheusEval
    from prometheus_eval.mock import MockLLM

    captured = []

    class Capture(MockLLM):
        def completions(self, messages, **kwargs):
            captured.extend(messages)
            return ["x [RESULT] A"] * len(messages)

    instruction, a, b, _ = paper_pairs(dataset, "quality")[0]
    PrometheusEval(model=Capture()).relative_grade(instructions=[instruction], responses_A=[a], responses_B=[b],
                                                    rubric=RUBRICS["quality"], reference_answers=[None])
    assert captured[0] == expected_first_quality(dataset)


def expected_first_quality(dataset: str) -> list[dict[str, str]]:
    from prometheus_eval.prompts import REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF

    instruction, a, b, _ = paper_pairs(dataset, "quality")[0]
    return [{"role": "system", "content": REL_SYSTEM_PROMPT},
            {"role": "user", "content": RELATIVE_PROMPT_WO_REF.format(instruction=instruction, response_A=a, response_B=b,
                                                                      rubric=RUBRICS["quality"])}]


def test_our_mistral_string_is_fastchats(package):
    """Edge cases of the conversion, against the package's own `_get_conversation_prompt` (fastchat)."""
    from persona_eval.plugins.judges.prometheus import mistral_prompt

    judge_pkg, _ = package
    for system, user in (("SYS", "USER"), ("", "USER"), ("S\n", " U "), ("SYS", "")):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        assert mistral_prompt(system, user) == judge_pkg._get_conversation_prompt(messages).strip()


def test_sampling_and_asks_are_the_packages_defaults(package, recorders):
    """The paper passed no params: prometheus-eval's defaults, and 1 + 10 retries per unparsed output."""
    judge_pkg, engine = package
    _FakeEngine.reply = "I cannot decide."
    try:
        instruction, a, b, _ = paper_pairs("BeaverTails", "quality")[0]
        engine.calls.clear()
        _, scores = judge_pkg.relative_grade(instructions=[instruction], responses_A=[a], responses_B=[b],
                                             rubric=RUBRICS["quality"], reference_answers=[None])
    finally:
        _FakeEngine.reply = "Feedback: fine. [RESULT] A"
    assert scores == [None] and len(engine.calls) == 11
    package_params = engine.calls[0][1]
    task, pairs = our_pairs("BeaverTails", "quality")
    judge = build_judge("prometheus", "raw-recorder:prometheus", task, 0)
    assert judge.max_attempts == 11
    ours = judge.params
    assert package_params == {"max_tokens": ours.max_new_tokens, "repetition_penalty": ours.repetition_penalty,
                              "best_of": 1, "temperature": ours.temperature, "top_p": ours.top_p}
    # Ours asks as often: 11 asks of a judge that never answers, then unscored (no P(A) fallback).
    recorders.replies = ["I cannot decide."] * 11
    (verdict,) = judge.compare(pairs[:1])
    assert len(recorders.requests) == 11 and verdict.winner is None and verdict.attempts == 11
    assert "after 11 attempts" in verdict.unscored_reason


def test_the_verdict_is_read_by_the_packages_parser(recorders):
    from prometheus_eval.parser import parse_output

    task, pairs = our_pairs("BeaverTails", "quality")
    text = "Feedback: A is better. [RESULT] A\nThat is all."
    assert parse_output(text, mode="relative")[1] == "A"
    recorders.replies = [text]
    assert build_judge("prometheus", "raw-recorder:p", task, 0).compare(pairs[:1])[0].winner == "A"
    # Our own default parser wants the verdict to close the output: it asks again.
    demo = resolve_task("demo")
    recorders.replies = [text, "Feedback. [RESULT] B"]
    anchored = build_judge("prometheus", "raw-recorder:p", demo, 0, feedback=True)
    assert anchored.compare(pairs[:1])[0].winner == "B"


def test_released_inputs_give_our_instructions(paper_outputs):
    """On every released BeaverTails and HHH item, run_judge.py's parsing of the released baseline and PT inputs
    gives the very instructions our criteria render: "Prompt: Prompt:" is what the paper's code sent."""
    from persona_eval.rendering.prompts import render_template

    for folder, dataset in (("beavertails", "BeaverTails"), ("hhh", "Anthropic HHH")):
        criteria = resolve_task(TASKS[dataset]).spec.judge.criteria
        base = json.loads((paper_outputs / folder / "dpo__none.json").read_text())
        test = json.loads((paper_outputs / folder / "pt_dpo__gold-rejected.json").read_text())
        mismatches = []
        for b, t in zip(base, test):
            p_base, _ = paper_parse(b["prompt"])
            _, persona = paper_parse(t["prompt"])
            question = b["prompt"][len("Prompt: "): -len("\nResponse:")]
            for name in RUBRICS:
                paper = INSTRUCTION_MAP[dataset] + " Prompt: " + p_base + (" Persona: " + persona if name == "personalization" else "")
                ours = render_template(criteria[name].instruction, prompt=question, persona=persona)
                if ours != paper:
                    mismatches.append((folder, name, question[:40]))
        assert mismatches == [] and len(base) >= 499
        assert paper_parse(base[0]["prompt"])[0].startswith("Prompt: ")  # the label survives the parser


def test_first_request_loads_no_weights():
    """The judge and its first request come from the spec alone: the hf model stays unloaded."""
    task = resolve_task("pe_beavertails")
    judge = build_judge("prometheus", "hf:embedded", task, 0)
    _, pairs = our_pairs("BeaverTails", "personalization")
    request = judge.first_request(pairs[0])
    assert request.raw and request.prompt.startswith("[INST] ") and judge.generator._model is None
    close_generators()
