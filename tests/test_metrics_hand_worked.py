"""dPQ against judgment sets worked out by hand (design.md section 2).

Order `baseline_first` shows (A = baseline, B = test); `test_first` shows (A = test,
B = baseline). Both verdicts map back to a side; agreement is a win for that side,
disagreement a tie, a missing or unparseable verdict in either order makes the pair
unscored. win_rate = test_wins / (test_wins + baseline_wins); dPQ = 100 * (P + Q - 1).
"""

from __future__ import annotations

import math

import pytest

from persona_eval.scoring.metrics import BASELINE, TEST, TIE, UNSCORED, dpq, item_outcomes, pair_outcome, side_of, summarize


def verdicts(item: str, criterion: str, baseline_first: str | None, test_first: str | None) -> list[dict]:
    return [
        {"item_id": item, "criterion": criterion, "order": "baseline_first", "winner": baseline_first},
        {"item_id": item, "criterion": criterion, "order": "test_first", "winner": test_first},
    ]


def test_orders_map_letters_to_sides():
    assert side_of("baseline_first", "A") == BASELINE
    assert side_of("baseline_first", "B") == TEST
    assert side_of("test_first", "A") == TEST
    assert side_of("test_first", "B") == BASELINE
    for order in ("baseline_first", "test_first"):
        assert side_of(order, None) is None
        assert side_of(order, "C") is None
    with pytest.raises(ValueError):
        side_of("sideways", "A")


def test_agreement_wins_disagreement_ties_missing_is_unscored():
    assert pair_outcome(TEST, TEST) == TEST
    assert pair_outcome(BASELINE, BASELINE) == BASELINE
    assert pair_outcome(TEST, BASELINE) == TIE
    assert pair_outcome(BASELINE, TEST) == TIE
    assert pair_outcome(None, TEST) == UNSCORED
    assert pair_outcome(BASELINE, None) == UNSCORED
    assert pair_outcome(None, None) == UNSCORED


def test_a_judge_that_always_says_A_only_ties():
    # Pure position bias: A in both orders means baseline once and test once.
    outcomes = item_outcomes(verdicts("x", "quality", "A", "A"))
    assert outcomes == {"x": {"quality": TIE}}


def test_a_missing_order_is_unscored():
    records = verdicts("x", "quality", "B", "A")[:1]  # only baseline_first was judged
    assert item_outcomes(records) == {"x": {"quality": UNSCORED}}


# The mixed case, by hand. Letters are (baseline_first, test_first).
#
#   item  personalization           quality
#   i1    B,A -> test,test = TEST   A,B -> base,base = BASELINE
#   i2    B,A -> TEST               B,A -> TEST
#   i3    A,B -> BASELINE           B,B -> test,base = TIE
#   i4    A,A -> base,test = TIE    A,B -> BASELINE
#   i5    -,A -> UNSCORED           B,A -> TEST
#   i6    B,A -> TEST               B,B -> TIE
#
# Personalization: 3 wins, 1 loss, 1 tie, 1 unscored -> P = 3 / (3 + 1) = 0.75
# Quality:         2 wins, 2 losses, 2 ties, 0 unscored -> Q = 2 / (2 + 2) = 0.50
# dPQ = 100 * (0.75 + 0.50 - 1) = +25.0
#
# Judge health: 24 verdicts, 1 unscored. Pairs with both verdicts: 5 (P) + 6 (Q) = 11, of
# which 1 + 2 = 3 are ties -> tie rate 3/11. Verdict "A" among the 23 scored verdicts:
# P: i1 1, i2 1, i3 1, i4 2, i5 1, i6 1 = 7; Q: i1 1, i2 1, i3 0, i4 1, i5 1, i6 0 = 4
# -> 11/23.
MIXED = {
    "i1": {"personalization": ("B", "A"), "quality": ("A", "B")},
    "i2": {"personalization": ("B", "A"), "quality": ("B", "A")},
    "i3": {"personalization": ("A", "B"), "quality": ("B", "B")},
    "i4": {"personalization": ("A", "A"), "quality": ("A", "B")},
    "i5": {"personalization": (None, "A"), "quality": ("B", "A")},
    "i6": {"personalization": ("B", "A"), "quality": ("B", "B")},
}

# Lengths in words: test - baseline = +10, +10, -10, -10, 0, 0.
LENGTHS = {
    "i1": {"test": 30, "baseline": 20}, "i2": {"test": 30, "baseline": 20}, "i3": {"test": 10, "baseline": 20},
    "i4": {"test": 10, "baseline": 20}, "i5": {"test": 20, "baseline": 20}, "i6": {"test": 20, "baseline": 20},
}
# Decided pairs (length difference x, +1 test win / -1 baseline win y):
#   P: i1 (10, 1), i2 (10, 1), i3 (-10, -1), i6 (0, 1);  Q: i1 (10, -1), i2 (10, 1), i4 (-10, -1), i5 (0, 1)
# mean x = 20/8 = 2.5, mean y = 2/8 = 0.25; sum dx*dy = 35, sum dx^2 = 550, sum dy^2 = 7.5
# Pearson r = 35 / sqrt(550 * 7.5) = 35 / sqrt(4125) ~= 0.545
EXPECTED_LENGTH_CORRELATION = 35 / math.sqrt(4125)


def mixed_records(table=MIXED) -> list[dict]:
    records = []
    for item, per_criterion in table.items():
        for criterion, (baseline_first, test_first) in per_criterion.items():
            records += verdicts(item, criterion, baseline_first, test_first)
    return records


def test_mixed_case_outcomes():
    outcomes = item_outcomes(mixed_records())
    assert {item: outcomes[item]["personalization"] for item in MIXED} == {
        "i1": TEST, "i2": TEST, "i3": BASELINE, "i4": TIE, "i5": UNSCORED, "i6": TEST,
    }
    assert {item: outcomes[item]["quality"] for item in MIXED} == {
        "i1": BASELINE, "i2": TEST, "i3": TIE, "i4": BASELINE, "i5": TEST, "i6": TIE,
    }


def test_mixed_case_counts_win_rates_and_dpq():
    summary = summarize(mixed_records(), lengths=LENGTHS, resamples=2000, seed=7)
    p, q = summary["criteria"]["personalization"], summary["criteria"]["quality"]
    assert (p["test_wins"], p["baseline_wins"], p["ties"], p["unscored"]) == (3, 1, 1, 1)
    assert (q["test_wins"], q["baseline_wins"], q["ties"], q["unscored"]) == (2, 2, 2, 0)
    assert p["win_rate"] == pytest.approx(0.75)
    assert q["win_rate"] == pytest.approx(0.50)
    assert summary["dpq"] == pytest.approx(25.0)
    assert summary["items"] == 6


def test_mixed_case_judge_health():
    health = summarize(mixed_records(), lengths=LENGTHS, resamples=0)["judge_health"]
    assert health["verdicts"] == 24
    assert health["unscored_verdicts"] == 1
    assert health["tie_rate"] == pytest.approx(3 / 11)
    assert health["position_a_win_share"] == pytest.approx(11 / 23)
    assert health["mean_words_test"] == pytest.approx(20.0)
    assert health["mean_words_baseline"] == pytest.approx(20.0)
    assert health["length_win_correlation"] == pytest.approx(EXPECTED_LENGTH_CORRELATION)


def test_bootstrap_interval_contains_the_estimate_and_is_deterministic():
    records = mixed_records()
    first = summarize(records, resamples=2000, seed=7)
    again = summarize(records, resamples=2000, seed=7)
    other = summarize(records, resamples=2000, seed=8)
    low, high = first["dpq_ci95"]
    assert -100.0 <= low <= 25.0 <= high <= 100.0
    assert low < high  # six items leave real uncertainty
    p_low, p_high = first["criteria"]["personalization"]["win_rate_ci95"]
    assert 0.0 <= p_low <= 0.75 <= p_high <= 1.0
    q_low, q_high = first["criteria"]["quality"]["win_rate_ci95"]
    assert 0.0 <= q_low <= 0.5 <= q_high <= 1.0
    assert first["dpq_ci95"] == again["dpq_ci95"]
    assert first["criteria"] == again["criteria"]
    assert other["dpq"] == first["dpq"]  # the point estimate never depends on the seed
    assert other["dpq_ci95"] != first["dpq_ci95"] or other["criteria"] != first["criteria"]


def test_all_ties_leave_win_rates_and_dpq_undefined():
    table = {f"t{i}": {"personalization": ("A", "A"), "quality": ("B", "B")} for i in range(5)}
    summary = summarize(mixed_records(table), resamples=200, seed=0)
    for criterion in ("personalization", "quality"):
        row = summary["criteria"][criterion]
        assert (row["test_wins"], row["baseline_wins"], row["ties"], row["unscored"]) == (0, 0, 5, 0)
        assert row["win_rate"] is None
        assert row["win_rate_ci95"] is None
    assert summary["dpq"] is None and summary["dpq_ci95"] is None
    assert summary["judge_health"]["tie_rate"] == 1.0


def test_all_unscored_counts_but_never_loses():
    table = {f"u{i}": {"personalization": (None, None), "quality": ("A", None)} for i in range(3)}
    summary = summarize(mixed_records(table), resamples=100)
    for criterion in ("personalization", "quality"):
        row = summary["criteria"][criterion]
        assert (row["test_wins"], row["baseline_wins"], row["ties"], row["unscored"]) == (0, 0, 0, 3)
    assert summary["dpq"] is None
    assert summary["judge_health"]["unscored_verdicts"] == 9 and summary["judge_health"]["tie_rate"] is None


def test_unscored_items_are_excluded_not_counted_as_losses():
    # Two clear test wins plus one item unscored in one order: P stays 1.0, not 2/3.
    table = {
        "w1": {"personalization": ("B", "A"), "quality": ("B", "A")},
        "w2": {"personalization": ("B", "A"), "quality": ("A", "B")},
        "u1": {"personalization": ("A", None), "quality": ("A", "B")},
    }
    summary = summarize(mixed_records(table), resamples=0)
    assert summary["criteria"]["personalization"]["win_rate"] == 1.0
    assert summary["criteria"]["personalization"]["unscored"] == 1
    # Q: 1 win (w1), 2 losses (w2, u1) -> 1/3; dPQ = 100 * (1 + 1/3 - 1) = 33.33...
    assert summary["criteria"]["quality"]["win_rate"] == pytest.approx(1 / 3)
    assert summary["dpq"] == pytest.approx(100 / 3)


@pytest.mark.parametrize(
    "p, q, expected",
    [(1.0, 1.0, 100.0), (0.0, 0.0, -100.0), (0.5, 0.5, 0.0), (0.75, 0.5, 25.0), (0.9, 0.3, 20.0), (None, 0.5, None), (0.5, None, None)],
)
def test_dpq_formula(p, q, expected):
    result = dpq(p, q)
    assert result == (None if expected is None else pytest.approx(expected))


def test_report_renders_undefined_dpq():
    from io import StringIO

    from rich.console import Console

    from persona_eval.display.report import render_results

    metrics = summarize(mixed_records({"t": {"personalization": ("A", "A"), "quality": ("A", "A")}}), resamples=10)
    results = {
        "task": {"name": "demo"}, "split": "rejected", "persona_source": {"name": "gold"}, "model": "m", "baseline": "b",
        "strategies": {"test": "pt", "baseline": "baseline"}, "judges": ["j"], "judge_model": "jm", "metrics": metrics,
        "run_dir": "runs/x",
    }
    buffer = StringIO()
    render_results(results, console=Console(file=buffer, width=200))
    assert "undefined" in buffer.getvalue()
