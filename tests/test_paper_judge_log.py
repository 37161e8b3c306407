"""Our aggregation against the paper's formula, on the paper's own judge log and on hand-built sets.

The paper's log (`judge_comparison_ptdpo_vs_ptsft_example.json`) holds, per criterion,
both orders of one item: ``winner`` is the judge's raw A/B and ``is_swapped`` true means
the test response was shown as A. The reference below is written out from the paper's
definition (design.md section 2), independently of `persona_eval.scoring.metrics`.
"""

from __future__ import annotations

import json
import random

import pytest

from persona_eval.display.report import render_results
from persona_eval.scoring.metrics import summarize

PAPER_CRITERIA = {"personalization": "personalization", "response_quality": "quality"}


def log_to_records(log: dict, item_id: str) -> list[dict]:
    records = []
    for paper_name, ours in PAPER_CRITERIA.items():
        entry = log[paper_name]
        for winner, swapped in zip(entry["winner"], entry["is_swapped"]):
            records.append({
                "item_id": item_id, "criterion": ours,
                "order": "test_first" if swapped else "baseline_first", "winner": winner,
            })
    return records


def paper_reference(logs: list[dict]) -> dict:
    """win rates and dPQ exactly as the paper defines them, from raw (winner, is_swapped) logs."""
    counts = {c: {"test": 0, "baseline": 0, "tie": 0, "unscored": 0} for c in PAPER_CRITERIA.values()}
    for log in logs:
        for paper_name, ours in PAPER_CRITERIA.items():
            entry = log[paper_name]
            sides = []
            for winner, swapped in zip(entry["winner"], entry["is_swapped"]):
                if winner not in ("A", "B"):
                    sides.append(None)
                elif swapped:  # test was A
                    sides.append("test" if winner == "A" else "baseline")
                else:  # baseline was A
                    sides.append("baseline" if winner == "A" else "test")
            if None in sides:
                counts[ours]["unscored"] += 1
            elif sides[0] == sides[1]:
                counts[ours][sides[0]] += 1
            else:
                counts[ours]["tie"] += 1
    rates = {}
    for criterion, c in counts.items():
        decided = c["test"] + c["baseline"]
        rates[criterion] = c["test"] / decided if decided else None
    p, q = rates["personalization"], rates["quality"]
    dpq = None if p is None or q is None else 100 * 0.5 * ((p - 0.5) / 0.5 + (q - 0.5) / 0.5)
    return {"counts": counts, "rates": rates, "dpq": dpq}


def assert_matches(summary: dict, reference: dict) -> None:
    for criterion, c in reference["counts"].items():
        row = summary["criteria"][criterion]
        assert (row["test_wins"], row["baseline_wins"], row["ties"], row["unscored"]) == (
            c["test"], c["baseline"], c["tie"], c["unscored"]
        ), criterion
        if reference["rates"][criterion] is None:
            assert row["win_rate"] is None
        else:
            assert row["win_rate"] == pytest.approx(reference["rates"][criterion])
    if reference["dpq"] is None:
        assert summary["dpq"] is None
    else:
        assert summary["dpq"] == pytest.approx(reference["dpq"])


def test_the_papers_own_judge_log(paper_outputs):
    log = json.loads((paper_outputs / "beavertails" / "judge_comparison_ptdpo_vs_ptsft_example.json").read_text())
    summary = summarize(log_to_records(log, "bt-0"), resamples=100)
    reference = paper_reference([log])
    assert_matches(summary, reference)
    # Read by hand: quality has baseline in both orders (A unswapped, B swapped): a baseline win;
    # personalization says A in both orders, i.e. it followed the position: a tie.
    assert summary["criteria"]["quality"]["baseline_wins"] == 1
    assert summary["criteria"]["personalization"]["ties"] == 1
    assert summary["dpq"] is None  # no decided personalization comparison: undefined, not 0
    assert summary["judge_health"]["position_a_win_share"] == pytest.approx(3 / 4)


def _synthetic_logs(paper_log: dict, n: int, seed: int, p_none: float = 0.05) -> list[dict]:
    """Logs in the paper's format, with random raw verdicts, random order of the two calls and some failures."""
    rng = random.Random(seed)
    logs = []
    for _ in range(n):
        log = {}
        for paper_name in PAPER_CRITERIA:
            swapped = [False, True] if rng.random() < 0.5 else [True, False]
            winners = [None if rng.random() < p_none else rng.choice("AB") for _ in swapped]
            log[paper_name] = {**paper_log[paper_name], "winner": winners, "is_swapped": swapped}
        logs.append(log)
    return logs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_items_in_the_papers_format(paper_outputs, seed):
    paper_log = json.loads((paper_outputs / "beavertails" / "judge_comparison_ptdpo_vs_ptsft_example.json").read_text())
    logs = _synthetic_logs(paper_log, 300, seed)
    records = [r for i, log in enumerate(logs) for r in log_to_records(log, f"item-{i}")]
    summary = summarize(records, resamples=1000, seed=7)
    reference = paper_reference(logs)
    assert_matches(summary, reference)
    low, high = summary["dpq_ci95"]
    assert low <= summary["dpq"] <= high
    for criterion in ("personalization", "quality"):
        lo, hi = summary["criteria"][criterion]["win_rate_ci95"]
        assert lo <= summary["criteria"][criterion]["win_rate"] <= hi
    # seeded: the same seed gives the same interval, another seed another one
    assert summarize(records, resamples=1000, seed=7)["dpq_ci95"] == summary["dpq_ci95"]
    assert summarize(records, resamples=1000, seed=8)["dpq_ci95"] != summary["dpq_ci95"]


def _hand_records(pairs: dict[str, dict[str, tuple[str | None, str | None]]]) -> list[dict]:
    """item -> criterion -> (raw winner with baseline first, raw winner with test first)."""
    out = []
    for item, per_criterion in pairs.items():
        for criterion, (first, second) in per_criterion.items():
            out.append({"item_id": item, "criterion": criterion, "order": "baseline_first", "winner": first,
                        "unscored_reason": None if first else "no verdict"})
            out.append({"item_id": item, "criterion": criterion, "order": "test_first", "winner": second,
                        "unscored_reason": None if second else "no verdict"})
    return out


def _results(summary: dict) -> dict:
    return {
        "task": {"name": "hand"}, "split": "rejected", "persona_source": {"name": "gold"},
        "model": "m", "baseline": "b", "strategies": {"test": "pt", "baseline": "baseline"},
        "judges": ["prometheus"], "judge_model": "hf:embedded", "metrics": summary,
        "per_judge": {"prometheus": summary}, "run_dir": "runs/x",
    }


def _printed(summary: dict) -> str:
    from rich.console import Console

    console = Console(record=True, width=120)
    render_results(_results(summary), console=console)
    return console.export_text()


def test_all_ties():
    # Every pair flips with the order: the judge always says A (or always B).
    records = _hand_records({f"i{k}": {"personalization": ("A", "A"), "quality": ("B", "B")} for k in range(6)})
    summary = summarize(records, resamples=200)
    for criterion in ("personalization", "quality"):
        row = summary["criteria"][criterion]
        assert (row["test_wins"], row["baseline_wins"], row["ties"], row["unscored"]) == (0, 0, 6, 0)
        assert row["win_rate"] is None and row["win_rate_ci95"] is None
    assert summary["dpq"] is None and summary["dpq_ci95"] is None
    assert summary["judge_health"]["tie_rate"] == 1.0
    assert summary["judge_health"]["position_a_win_share"] == 0.5
    assert "undefined" in _printed(summary)


def test_all_unscored():
    records = _hand_records({f"i{k}": {"personalization": (None, None), "quality": (None, "A")} for k in range(5)})
    summary = summarize(records, resamples=200)
    for criterion in ("personalization", "quality"):
        row = summary["criteria"][criterion]
        assert (row["test_wins"], row["baseline_wins"], row["ties"], row["unscored"]) == (0, 0, 0, 5)
        assert row["win_rate"] is None
    assert summary["dpq"] is None  # undefined, not 0
    assert summary["judge_health"]["tie_rate"] is None
    assert summary["judge_health"]["unscored_verdicts"] == 15
    assert summary["judge_health"]["unscored_reasons"] == {"no verdict": 15}
    text = _printed(summary)
    assert "dPQ = undefined" in text


def test_mixed_by_hand():
    records = _hand_records({
        "a": {"personalization": ("B", "A"), "quality": ("B", "A")},  # test, test
        "b": {"personalization": ("B", "A"), "quality": ("A", "B")},  # test, baseline
        "c": {"personalization": ("A", "B"), "quality": ("A", "A")},  # baseline, tie
        "d": {"personalization": ("B", "B"), "quality": (None, "A")},  # tie, unscored
        "e": {"personalization": ("B", "A"), "quality": ("B", "A")},  # test, test
    })
    lengths = {"a": {"test": 30, "baseline": 10}, "b": {"test": 25, "baseline": 12}, "c": {"test": 8, "baseline": 20},
               "d": {"test": 10, "baseline": 10}, "e": {"test": 40, "baseline": 9}}
    summary = summarize(records, lengths=lengths, resamples=1000)
    p, q = summary["criteria"]["personalization"], summary["criteria"]["quality"]
    assert (p["test_wins"], p["baseline_wins"], p["ties"], p["unscored"]) == (3, 1, 1, 0)
    assert (q["test_wins"], q["baseline_wins"], q["ties"], q["unscored"]) == (2, 1, 1, 1)
    assert p["win_rate"] == pytest.approx(0.75) and q["win_rate"] == pytest.approx(2 / 3)
    assert summary["dpq"] == pytest.approx(100 * (0.75 + 2 / 3 - 1))
    health = summary["judge_health"]
    assert health["tie_rate"] == pytest.approx(2 / 9)
    assert health["mean_words_test"] == pytest.approx(113 / 5) and health["mean_words_baseline"] == pytest.approx(61 / 5)
    # Pearson over decided (item, criterion) pairs: test-minus-baseline words vs +1 win / -1 loss
    import numpy as np

    xs = [20, 20, 13, 13, -12, 31, 31]
    ys = [1, 1, 1, -1, -1, 1, 1]
    assert health["length_win_correlation"] == pytest.approx(float(np.corrcoef(xs, ys)[0, 1]))
    assert health["length_win_correlation"] > 0.7  # longer test answers won
    text = _printed(summary)
    assert "+41.7" in text and "0.750" in text
