"""The pairwise judges: verdicts anchored at the end, bounded re-asks, P(A), unscored reasons, identities."""

from __future__ import annotations

import judging_support as js
import pytest

from persona_eval.contracts import registry
from persona_eval.contracts.records import GenParams, PairRequest
from persona_eval.pipeline.judge import criteria_hash, judge_identity
from persona_eval.plugins.judges.gpt4o import PROMPT_TEMPLATE, parse_verdict
from persona_eval.plugins.judges.prometheus import parse_relative
from persona_eval.taskfile.loading import resolve_task


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Both fine, A is warmer.\nVerdict: A", "A"),
        ("Rationale.\nVerdict: B\n\n", "B"),
        ("Rationale.\n**Verdict:** B", "B"),
        ("Rationale.\nFinal verdict: [A]", "A"),
        ("Rationale.\nVerdict: Response B.", "B"),
        ("verdict - a", "A"),
        ("Verdict: A\nOn second thought B is better.", None),  # not at the end
        ("Verdict: A\nVerdict: B", "B"),  # the last one closes the text
        ("Verdict: A or B", None),
        ("Verdict: tie", None),
        ("I prefer A.", None),
        ("", None),
    ],
)
def test_gpt4o_verdict_is_anchored_at_the_end(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Feedback. [RESULT] A", "A"),
        ("Feedback.\n[RESULT] B\n", "B"),
        ("Feedback.\n[RESULT]\nA", "A"),
        ("Feedback.\n**[RESULT] B**", "B"),
        ("[RESULT] A\nThen more feedback that changes its mind.", None),  # the package alone says A here
        ("Result: B\nbut in the end", None),
        ("x [RESULT] A [RESULT] B", "B"),
        ("no verdict at all", None),
    ],
)
def test_prometheus_verdict_is_anchored_at_the_end(text, expected):
    assert parse_relative(text) == expected


def test_package_parser_alone_is_not_anchored():
    """Why parse_relative restricts the text it hands to prometheus-eval's parser."""
    from prometheus_eval.parser import parse_output

    assert parse_output("[RESULT] A\nThen more feedback that changes its mind.", mode="relative")[1] == "A"


def _pairs(n: int = 3) -> list[PairRequest]:
    return [
        PairRequest(id=f"i{k}", criterion="quality", instruction=f"Answer question {k}.", rubric="[Is it good?]",
                    response_a="short" if k % 2 else "a much longer answer here",
                    response_b="a much longer answer here" if k % 2 else "short")
        for k in range(n)
    ]


def _judge(name: str, mode: str, *, probs: bool = False, max_attempts: int = 3):
    generator = registry.generators.create("scripted", mode, probs=probs)
    return registry.judges.create(name, generator, params=GenParams(max_new_tokens=64), max_attempts=max_attempts)


@pytest.mark.parametrize("name", ["gpt-4o", "prometheus"])
def test_text_verdicts_and_probabilities(scripted, name):
    pairs = _pairs()
    verdicts = _judge(name, "longer").compare(pairs)
    assert [v.winner for v in verdicts] == ["A", "B", "A"]
    assert all(v.attempts == 1 and v.unscored_reason is None and v.prob_a is None for v in verdicts)
    assert len(scripted.judge_calls()) == 3
    with_probs = _judge(name, "longer", probs=True).compare(pairs)
    assert [v.winner for v in with_probs] == ["A", "B", "A"]
    assert [v.prob_a for v in with_probs] == [0.8, 0.3, 0.8]  # recorded next to the text verdict


@pytest.mark.parametrize("name", ["gpt-4o", "prometheus"])
def test_reasks_are_bounded_and_a_missing_verdict_is_unscored(scripted, name):
    pairs = _pairs()
    flaky = _judge(name, "flaky", max_attempts=3).compare(pairs)
    assert [v.winner for v in flaky] == ["A", "B", "A"]
    assert all(v.attempts == 2 for v in flaky)
    assert len(scripted.judge_calls("flaky")) == 6  # one failed ask and one re-ask each

    silent = _judge(name, "silent", max_attempts=3).compare(pairs)
    assert all(v.winner is None for v in silent)
    assert all(v.attempts == 3 and "after 3 attempts" in v.unscored_reason for v in silent)
    assert all(v.raw == "Both responses have merits and I cannot decide." for v in silent)
    assert len(scripted.judge_calls("silent")) == 9  # bounded: exactly max_attempts asks per pair

    once = _judge(name, "silent", max_attempts=1).compare(pairs[:1])
    assert once[0].winner is None and once[0].attempts == 1 and "attempts" not in once[0].unscored_reason


def test_gpt4o_reask_reminds_the_judge(scripted):
    _judge("gpt-4o", "flaky", max_attempts=2).compare(_pairs(1))
    first, second = scripted.judge_calls("flaky")
    assert "Reminder:" not in first and "Reminder:" in second
    assert first.startswith(PROMPT_TEMPLATE.split("{", 1)[0].rstrip())


@pytest.mark.parametrize("name", ["gpt-4o", "prometheus"])
def test_probability_decides_when_the_text_has_no_verdict(scripted, name):
    verdicts = _judge(name, "flaky", probs=True, max_attempts=3).compare(_pairs())
    assert [v.winner for v in verdicts] == ["A", "B", "A"]
    assert [v.prob_a for v in verdicts] == [0.8, 0.3, 0.8]
    assert all(v.unscored_reason is None for v in verdicts)
    # P(A) settled it: no re-ask
    assert len(scripted.judge_calls("flaky")) == 3
    # P(A) = P(B) decides nothing: unscored with the reason
    even = _judge(name, "silent", probs=True, max_attempts=2).compare(_pairs(1))[0]
    assert even.winner is None and even.prob_a == 0.5 and "P(A) = P(B)" in even.unscored_reason


def test_verdict_only_modes_need_no_generation(scripted):
    gpt = registry.judges.create("gpt-4o", registry.generators.create("scripted", "longer", probs=True),
                                 params=GenParams(), max_attempts=2, rationale=False)
    prom = registry.judges.create("prometheus", registry.generators.create("scripted", "longer", probs=True),
                                  params=GenParams(), max_attempts=2, feedback=False)
    for judge in (gpt, prom):
        verdicts = judge.compare(_pairs())
        assert [v.winner for v in verdicts] == ["A", "B", "A"] and all(v.raw == "" for v in verdicts)
    assert scripted.judge_calls() == []  # read from probabilities only


def test_verdict_only_without_probabilities_falls_back_to_text(scripted, caplog):
    judge = registry.judges.create("gpt-4o", registry.generators.create("scripted", "longer"),
                                   params=GenParams(), max_attempts=2, rationale=False)
    assert [v.winner for v in judge.compare(_pairs(2))] == ["A", "B"]
    assert "rationale=false needs log-probabilities" in caplog.text


def test_identities_name_template_rubric_and_model(scripted):
    task = resolve_task("demo")
    gpt = judge_identity(_judge("gpt-4o", "longer"), task)
    prom = judge_identity(_judge("prometheus", "longer"), task)
    for identity in (gpt, prom):
        assert identity["rubric"] == criteria_hash(task)
        assert len(identity["template"]) == 16
        assert identity["model"] == {"backend": "scripted", "model": "longer", "probs": False}
    assert gpt["judge"] == "gpt-4o" and prom["judge"] == "prometheus"
    assert gpt["template"] != prom["template"]
    assert judge_identity(_judge("gpt-4o", "shorter"), task) != gpt
    # a different rubric is a different judge
    changed = task.spec.model_copy(deep=True)
    changed.judge.criteria["quality"].rubric = "[Is the response concise?]"
    other = type(task)(spec=changed, path=task.path)
    assert criteria_hash(other) != criteria_hash(task)
    assert judge_identity(_judge("gpt-4o", "longer"), other)["rubric"] != gpt["rubric"]


def test_alias_and_unknown_judge_names(scripted):
    assert registry.judges.entry("openai-judge").name == "gpt-4o"
    from persona_eval.errors import UnknownNameError
    from persona_eval.pipeline.judges import parse_judge_choices

    with pytest.raises(UnknownNameError, match="did you mean"):
        parse_judge_choices(["gpt4o"], "scripted:longer")
    choices = parse_judge_choices(["prometheus", "gpt-4o@scripted:shorter"], "scripted:longer")
    assert [(c.name, c.model) for c in choices] == [("prometheus", "scripted:longer"), ("gpt-4o", "scripted:shorter")]
    from persona_eval.errors import UsageError

    with pytest.raises(UsageError, match="given twice"):
        parse_judge_choices(["gpt-4o", "gpt-4o"], "scripted:longer")
    with pytest.raises(UsageError, match="NAME@BACKEND:MODEL"):
        parse_judge_choices(["gpt-4o@"], "scripted:longer")


@pytest.mark.slow
def test_gpt4o_judge_on_the_embedded_model(embedded_model_dir):
    """The judge on a real local model: verdicts from P(A) after "Verdict:", and a short written pass."""
    from persona_eval.contracts.factories import build_generator

    generator = build_generator("hf:embedded")
    quick = registry.judges.create("gpt-4o", generator, params=GenParams(max_new_tokens=8), max_attempts=1, rationale=False)
    verdicts = quick.compare(_pairs(2))
    assert all(v.winner in ("A", "B") and 0.0 < v.prob_a < 1.0 for v in verdicts)
    written = registry.judges.create("gpt-4o", generator, params=GenParams(max_new_tokens=8), max_attempts=1)
    verdicts = written.compare(_pairs(1))
    for v in verdicts:
        # a 135M model rarely writes the verdict line; P(A) then decides, or it is unscored with a reason
        assert v.prob_a is not None
        assert (v.winner in ("A", "B")) != bool(v.unscored_reason)


# ---- the paper's outputs, judged end to end --------------------------------------------


def _paper_run_options(paper_outputs, task_path, tmp_path, judge_model: str, *, judges=("prometheus",), limit=8):
    from persona_eval.pipeline.run import RunOptions

    bt = paper_outputs / "beavertails"
    return RunOptions(
        task=str(task_path), split="rejected", model=f"file:{bt / 'pt_dpo__gold-rejected.json'}",
        baseline=f"file:{bt / 'dpo__gold-rejected.json'}", judges=judges, judge_model=judge_model,
        limit=limit, output_dir=str(tmp_path / "run"), cache_path=str(tmp_path / "cache.sqlite"), bootstrap=300,
    )


def _longer_judge(chat):
    """A deterministic judge behind the server: the longer response wins, in the judge's own format."""
    system, prompt, _ = chat.parts()
    a, b = js._responses(prompt)
    choice = "A" if len(a) >= len(b) else "B"
    return f"Feedback. [RESULT] {choice}" if "###Score Rubric" in prompt else f"Rationale.\nVerdict: {choice}"


def test_paper_outputs_judged_over_a_loopback_openai_server(paper_outputs, tmp_path):
    import json

    from openai_server_support import FunctionResponder, serve

    from persona_eval.contracts.factories import close_generators
    from persona_eval.pipeline.run import Run
    from persona_eval.plugins.generators.file import strip_end_markers

    task_path = js.write_paper_task(tmp_path / "task", paper_outputs)
    bt = paper_outputs / "beavertails"
    with serve(FunctionResponder(_longer_judge)) as server:
        spec = f"openai:judge,base_url={server.base_url},max_concurrency=8"
        try:
            options = _paper_run_options(paper_outputs, task_path, tmp_path, spec, judges=("prometheus", "gpt-4o"))
            results = Run(options, progress=False).execute()
        finally:
            close_generators()
        served = server.stats.snapshot()
    # the generations are the paper's own responses, end markers stripped
    test_out = [strip_end_markers(r["response"])[0] for r in json.loads((bt / "pt_dpo__gold-rejected.json").read_text())[:8]]
    base_out = [strip_end_markers(r["response"])[0] for r in json.loads((bt / "dpo__gold-rejected.json").read_text())[:8]]
    generations = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert [g["response"] for g in generations if g["role"] == "test"] == test_out
    assert [g["response"] for g in generations if g["role"] == "baseline"] == base_out
    # 8 items x 2 criteria x 2 orders x 2 judges, each one HTTP request
    assert results["api"][spec]["requests"] == 64 and served["served"] == 64
    longer = sum(len(t) > len(b) for t, b in zip(test_out, base_out))
    for label in ("prometheus", "gpt-4o", None):
        block = results["per_judge"][label] if label else results["metrics"]
        for criterion in ("personalization", "quality"):
            row = block["criteria"][criterion]
            assert (row["test_wins"], row["baseline_wins"], row["ties"], row["unscored"]) == (longer, 8 - longer, 0, 0)
            assert row["win_rate_ci95"] is not None
        assert block["dpq"] == pytest.approx(100 * (2 * longer / 8 - 1))
        assert block["judge_health"]["tie_rate"] == 0.0
    correlation = results["metrics"]["judge_health"]["length_win_correlation"]
    if 0 < longer < 8:
        assert correlation > 0.5  # the longer answer always won
    else:
        assert correlation is None  # one side won everything: no correlation to speak of


@pytest.mark.slow
def test_paper_outputs_judged_by_the_embedded_model(paper_outputs, tmp_path, embedded_model_dir):
    from persona_eval.contracts.factories import close_generators
    from persona_eval.pipeline.run import Run

    task_path = js.write_paper_task(tmp_path / "task", paper_outputs, judge_options="{feedback: false}")
    try:
        results = Run(_paper_run_options(paper_outputs, task_path, tmp_path, "hf:embedded", limit=2), progress=False).execute()
    finally:
        close_generators()
    assert results["metrics"]["items"] == 2
    for criterion in ("personalization", "quality"):
        row = results["metrics"]["criteria"][criterion]
        assert row["test_wins"] + row["baseline_wins"] + row["ties"] + row["unscored"] == 2
    health = results["metrics"]["judge_health"]
    assert health["verdicts"] == 8 and health["mean_words_test"] > 0 and health["position_a_win_share"] is not None
