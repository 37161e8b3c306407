"""Majority vote across judges: the tie-breaking rules and the headline of a several-judge run."""

from __future__ import annotations

import pytest

from persona_eval.pipeline.items import JudgeItem
from persona_eval.pipeline.score import score
from persona_eval.scoring.voting import agreement, majority_outcomes, vote
from persona_eval.taskfile.loading import resolve_task

T, B, TIE, U = "test", "baseline", "tie", "unscored"


@pytest.mark.parametrize(
    "outcomes, expected",
    [
        ([T, T, B], T),
        ([B, B, T], B),
        ([T, B, TIE], TIE),  # no majority
        ([T, B], TIE),  # 1 vs 1
        ([T, TIE], TIE),  # 1 of 2 is not more than half
        ([TIE, TIE, T], TIE),  # most judges were position-inconsistent
        ([T, U, U], T),  # unscored judges abstain
        ([T, B, U], TIE),
        ([U, U, U], U),  # everybody abstains
        ([T], T),
        ([], U),
    ],
)
def test_vote_rules(outcomes, expected):
    assert vote(outcomes) == expected


def test_majority_outcomes_treats_missing_as_abstention():
    per_judge = {
        "j1": {"x": {"personalization": T, "quality": B}, "y": {"personalization": T}},
        "j2": {"x": {"personalization": T, "quality": T}},
        "j3": {"x": {"personalization": B, "quality": B}, "y": {"personalization": B, "quality": U}},
    }
    majority = majority_outcomes(per_judge)
    assert majority == {"x": {"personalization": T, "quality": B}, "y": {"personalization": TIE, "quality": U}}
    stats = agreement(per_judge)
    # x/personalization (T,T,B), x/quality (B,T,B), y/personalization (T,B): none unanimous
    assert stats == {"comparisons": 3, "unanimous": 0, "unanimous_share": 0.0}


def _records(judge_verdicts: dict[str, tuple[str | None, str | None]]):
    """item -> (raw winner baseline_first, raw winner test_first), both criteria alike."""
    out = []
    for item, (first, second) in judge_verdicts.items():
        for criterion in ("personalization", "quality"):
            out.append({"item_id": item, "criterion": criterion, "order": "baseline_first", "winner": first})
            out.append({"item_id": item, "criterion": criterion, "order": "test_first", "winner": second})
    return out


def test_score_with_three_judges_uses_the_majority_as_headline():
    task = resolve_task("demo")
    items = [JudgeItem(id=i, prompt="p", persona="q") for i in ("a", "b", "c", "d")]
    responses = {(i.id, role): "word " * (5 if role == "test" else 3) for i in items for role in ("test", "baseline")}
    # raw verdicts: (B, A) = test wins in both orders; (A, B) = baseline wins; (A, A) = tie
    judgments = {
        "j1": _records({"a": ("B", "A"), "b": ("B", "A"), "c": ("A", "B"), "d": ("B", "A")}),
        "j2": _records({"a": ("B", "A"), "b": ("A", "B"), "c": ("A", "B"), "d": (None, None)}),
        "j3": _records({"a": ("A", "B"), "b": ("A", "A"), "c": ("A", "A"), "d": (None, None)}),
    }
    result = score(task=task, labels=["j1", "j2", "j3"], items=items, responses=responses, judgments=judgments, resamples=200)
    headline = result["metrics"]
    # a: T,T,B -> T; b: T,B,tie -> tie; c: B,B,tie -> B; d: T,U,U -> T
    for criterion in ("personalization", "quality"):
        row = headline["criteria"][criterion]
        assert (row["test_wins"], row["baseline_wins"], row["ties"], row["unscored"]) == (2, 1, 1, 0)
        assert row["win_rate"] == pytest.approx(2 / 3)
    assert headline["dpq"] == pytest.approx(100 * (2 / 3 + 2 / 3 - 1))
    assert headline["voting"]["judges"] == ["j1", "j2", "j3"]
    assert "no majority" in headline["voting"]["rule"]
    # per-judge results are kept, each by its own verdicts
    assert set(result["per_judge"]) == {"j1", "j2", "j3"}
    assert result["per_judge"]["j1"]["criteria"]["quality"]["test_wins"] == 3
    assert result["per_judge"]["j2"]["criteria"]["quality"]["unscored"] == 1
    assert result["per_judge"]["j3"]["criteria"]["quality"]["ties"] == 2
    # the pooled position share counts every judge's scored verdicts
    pooled = [r for records in judgments.values() for r in records if r["winner"]]
    assert headline["judge_health"]["position_a_win_share"] == pytest.approx(sum(r["winner"] == "A" for r in pooled) / len(pooled))


def test_single_judge_headline_is_that_judge():
    task = resolve_task("demo")
    items = [JudgeItem(id="a", prompt="p", persona="q")]
    responses = {("a", "test"): "x", ("a", "baseline"): "y"}
    judgments = {"only": _records({"a": ("B", "A")})}
    result = score(task=task, labels=["only"], items=items, responses=responses, judgments=judgments, resamples=50)
    assert result["metrics"] == result["per_judge"]["only"]
    assert "voting" not in result["metrics"]
