"""Verdict policy and departures: what decides a verdict is an option, and results name it; settings a backend
cannot apply are listed; the paper's sampling settings reach hf, vllm and openai as each can take them.

The stub judge backend below answers the first ask without a verdict, and a re-ask with the shorter
response, while its probabilities favour the longer one: under ``verdict_fallback=prob_a`` (today's
default) P(A) settles the first ask, under ``none`` (the paper) the re-ask decides, so the winners
differ. Both runs go through the whole pipeline and write results.json and config.json.
"""

from __future__ import annotations

import json
import re

import pytest

from persona_eval.contracts import plugin_manager, registry
from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest, GenResult, PairRequest
from persona_eval.pipeline.results import fidelity_block, unapplied_settings
from persona_eval.pipeline.run import Run, RunOptions

_RESPONSES = re.compile(r"###Response A:\n(.*?)\n\n###Response B:\n(.*?)\n\n###Score Rubric", re.S)


class SplitJudge(Generator):
    """No verdict on a first ask; on a re-ask, the shorter response. P(A): the longer one."""

    asks: dict[str, int] = {}

    def __init__(self, model: str):
        self.model = model

    def identity(self):
        return {"backend": "split-judge", "model": self.model}

    @staticmethod
    def _longer_is_a(prompt: str) -> bool:
        a, b = _RESPONSES.search(prompt).groups()
        return len(a) >= len(b)

    def generate(self, requests):
        out = []
        for request in requests:
            seen = SplitJudge.asks[request.prompt] = SplitJudge.asks.get(request.prompt, 0) + 1
            if seen == 1:
                out.append(GenResult(text="Both have merits.", finish_reason="stop"))
            else:
                out.append(GenResult(text="Feedback. [RESULT] " + ("B" if self._longer_is_a(request.prompt) else "A"),
                                     finish_reason="stop"))
        return out

    def choice_probs(self, requests, choices):
        return [{"A": 0.9, "B": 0.1} if self._longer_is_a(r.prompt) else {"A": 0.1, "B": 0.9} for r in requests]


class _Plugin:
    @hookimpl
    def register_generators(self, register):
        register("split-judge", SplitJudge, description="test only: text and P(A) disagree")


@pytest.fixture
def split_judge(scripted):
    plugin = _Plugin()
    plugin_manager.get_plugin_manager().register(plugin, name="split-judge-test")
    registry.reset_registries()
    SplitJudge.asks = {}
    yield SplitJudge
    plugin_manager.get_plugin_manager().unregister(plugin)
    registry.reset_registries()


def _run(tmp_path, name: str, fallback: str | None) -> dict:
    options = {"feedback": True, **({"verdict_fallback": fallback} if fallback else {})}
    SplitJudge.asks = {}
    return Run(RunOptions(model="scripted:writer", judges=("prometheus",), judge_model="split-judge:x", judge_options=options,
                          limit=3, output_dir=str(tmp_path / name), use_cache=False, bootstrap=20), progress=False).execute()


def test_the_two_policies_give_different_winners_and_results_name_them(split_judge, tmp_path):
    by_prob = _run(tmp_path, "default", None)
    by_text = _run(tmp_path, "paper", "none")
    # The scripted writer gives the persona-tailored (test) answer more words: P(A) crowns it,
    # the re-asked text the baseline.
    assert by_prob["metrics"]["dpq"] == 100.0 and by_text["metrics"]["dpq"] == -100.0
    assert by_prob["judge_policy"]["prometheus"]["verdict_fallback"] == "prob_a"
    assert by_text["judge_policy"]["prometheus"]["verdict_fallback"] == "none"
    for name, result in (("default", by_prob), ("paper", by_text)):
        policy = result["judge_policy"]["prometheus"]
        assert policy["max_attempts"] == 2 and policy["prompt_format"] == "chat_template" and policy["verdict"] == "read from the text"
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["judge_policy"] == result["judge_policy"] and config["departures"] == result["departures"] == {}
    records = [json.loads(line) for line in (tmp_path / "paper" / "judgments.jsonl").read_text().splitlines()]
    assert all(r["attempts"] == 2 and r["prob_a"] is not None for r in records)  # P(A) recorded, never the verdict
    # An option at its default is not in the identity: a task that does not set it keeps its cache.
    assert "verdict_fallback" not in by_prob["identities"]["judges"]["prometheus"]
    assert by_text["identities"]["judges"]["prometheus"]["verdict_fallback"] == "none"
    # A re-judge names its own judges' policy too (here the run's options carry over).
    from persona_eval.pipeline.run import rejudge

    SplitJudge.asks = {}
    again = rejudge(tmp_path / "paper", use_cache=False, resamples=20)
    assert again["judge_policy"]["prometheus"]["verdict_fallback"] == "none" and again["metrics"]["dpq"] == -100.0
    assert again["config"]["judging"]["judge_policy"] == again["judge_policy"]


def test_policy_options_are_checked_and_gpt4o_takes_the_fallback(split_judge):
    from persona_eval.errors import UsageError

    generator = registry.generators.create("split-judge", "x")
    with pytest.raises(UsageError, match=r"verdict_fallback='maybe': expected one of prob_a, none"):
        registry.judges.create("prometheus", generator, params=GenParams(), verdict_fallback="maybe")
    with pytest.raises(UsageError, match=r"prompt_format='fastchat': expected one of chat_template, paper"):
        registry.judges.create("prometheus", generator, params=GenParams(), prompt_format="fastchat")
    gpt = registry.judges.create("gpt-4o", generator, params=GenParams(), verdict_fallback="none")
    assert gpt.identity()["verdict_fallback"] == "none" and gpt.policy()["verdict_fallback"] == "none"
    assert "verdict_fallback" not in registry.judges.create("gpt-4o", generator, params=GenParams()).identity()


# ---- departures: what a backend cannot apply ------------------------------------------------------

PAPER_JUDGE = GenParams(max_new_tokens=1024, temperature=1.0, top_p=0.9, repetition_penalty=1.03)


def _paper_judge(spec: str, **options):
    from persona_eval.contracts.factories import build_judge
    from persona_eval.taskfile.loading import resolve_task

    return build_judge("prometheus", spec, resolve_task("pe_beavertails"), 0, **options)


def test_openai_judge_lists_what_it_cannot_apply(monkeypatch):
    from persona_eval.contracts.factories import close_generators

    judge = _paper_judge("openai:prometheus,base_url=http://127.0.0.1:9/v1")
    block = fidelity_block({"prometheus": judge}, {})
    found = block["departures"]["prometheus"]
    assert found[0] == ("repetition_penalty=1.03 not applied: openai backend: the OpenAI chat API has no such parameter "
                        "(its frequency and presence penalties are other formulas)")
    assert "prompt_format=paper on a chat endpoint" in found[1] and len(found) == 2
    assert block["judge_policy"]["prometheus"]["sent_as"].startswith("system + user chat messages")
    # ... and the request body indeed carries no such field.
    body = judge.generator.body(judge.first_request(PairRequest(id="x", criterion="quality", instruction="I", rubric="R",
                                                                 response_a="a", response_b="b")))
    assert "repetition_penalty" not in body and "min_tokens" not in body
    close_generators()


def test_local_backends_apply_everything_and_unknown_backends_say_so():
    from persona_eval.contracts.factories import close_generators

    hf = _paper_judge("hf:embedded")
    assert fidelity_block({"prometheus": hf}, {})["departures"] == {}
    assert hf.policy()["sent_as"].startswith('one raw string, fastchat "mistral"')
    close_generators()

    class Silent(Generator):
        def identity(self):
            return {}

        def generate(self, requests):
            return []

    generation = GenParams(max_new_tokens=512, min_new_tokens=10)
    assert unapplied_settings(Silent(), generation) == ["min_new_tokens=10: backend Silent does not say whether it applies it"]
    assert unapplied_settings(Silent(), GenParams()) == []  # nothing set, nothing to say
    block = fidelity_block({}, {"test": (Silent(), generation), "baseline": (Silent(), GenParams())})
    assert block == {"judge_policy": {}, "departures": {"test": [
        "min_new_tokens=10: backend Silent does not say whether it applies it"]}}
    # A re-judge keeps the judged run's role departures.
    again = fidelity_block({}, {}, earlier={"departures": {"test": ["x"], "prometheus": ["old judge"]}})
    assert again["departures"] == {"test": ["x"]}


# ---- the mapping of the settings to each backend ---------------------------------------------------


def test_backend_mappings_of_min_new_tokens_and_repetition_penalty():
    from persona_eval.plugins.generators.sampling import hf_generate_settings, unapplied_params
    from persona_eval.plugins.generators.vllm import sampling_kwargs

    paper = GenParams(max_new_tokens=512, min_new_tokens=10, repetition_penalty=1.03, stop=("\nPrompt:",))
    assert hf_generate_settings(paper) == {"min_new_tokens": 10, "repetition_penalty": 1.03}
    assert hf_generate_settings(GenParams()) == {}
    kwargs = sampling_kwargs(paper)
    assert (kwargs["min_tokens"], kwargs["repetition_penalty"], kwargs["max_tokens"], kwargs["stop"]) == (10, 1.03, 512, ["\nPrompt:"])
    assert "min_tokens" not in sampling_kwargs(GenParams()) and "repetition_penalty" not in sampling_kwargs(GenParams())
    assert unapplied_params("hf", paper) == unapplied_params("vllm", paper) == []
    assert [line.split(" not applied")[0] for line in unapplied_params("openai", paper)] == ["min_new_tokens=10", "repetition_penalty=1.03"]
    # Values that change nothing are no departure.
    assert unapplied_params("openai", GenParams(min_new_tokens=0, repetition_penalty=1.0)) == []


def test_reasks_keep_the_optional_settings():
    from persona_eval.plugins.judges.pairwise import reask_params

    again = reask_params(PAPER_JUDGE, 3, min_temperature=0.7)
    assert (again.repetition_penalty, again.seed, again.temperature, again.top_p) == (1.03, 3, 1.0, 0.9)


@pytest.mark.slow
def test_hf_applies_min_new_tokens_and_repetition_penalty():
    """On the embedded model: a reply that would stop after a word runs to min_new_tokens; the penalty changes the text."""
    from persona_eval.contracts.factories import close_generators

    generator = registry.generators.create("hf", "embedded", device="cpu")
    ask = "Reply with one word: yes or no. Is water wet?"

    def run(**settings):
        return generator.generate([GenRequest(id="x", prompt=ask, params=GenParams(max_new_tokens=12, **settings))])[0]

    plain, long = run(), run(min_new_tokens=12)
    assert plain.output_tokens < 12 and long.output_tokens == 12
    # Same length, greedy: only the penalty can make the two texts differ.
    penalized = run(min_new_tokens=12, repetition_penalty=1.5)
    assert penalized.output_tokens == 12 and penalized.text != long.text
    close_generators()


def test_task_generation_fields_are_optional_and_stay_out_of_the_hash():
    from persona_eval.taskfile.loading import resolve_task
    from persona_eval.taskfile.schema import GenerationSpec

    assert "min_new_tokens" not in GenerationSpec().model_dump() and "repetition_penalty" not in GenerationSpec().model_dump()
    assert GenerationSpec(min_new_tokens=10).model_dump()["min_new_tokens"] == 10
    paper = resolve_task("pe_beavertails").spec
    assert (paper.generation.min_new_tokens, paper.generation.repetition_penalty) == (10, None)
    assert (paper.judge.generation.repetition_penalty, paper.judge.generation.min_new_tokens) == (1.03, None)
