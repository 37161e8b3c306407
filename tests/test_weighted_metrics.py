"""The probability-weighted preference beside the paper's metric, against examples worked by hand.

Order `baseline_first` shows (A = baseline, B = test), `test_first` shows (A = test,
B = baseline). From a record's P(A): P(test better) = P(A) with the test answer first,
1 - P(A) with it second; an item's value is the mean over the records (orders, and judges
when pooled) that have a P(A), scored or not; a criterion's weighted win rate is the mean
over the items that have one; weighted dPQ = 100 x (P_w + Q_w - 1).

Also here: the report text (both numbers, which one leads, why the paper's is undefined),
the task's ``report.headline`` and its hash, and the leaderboard's weighted columns and sort.
"""

from __future__ import annotations

import copy
import inspect
import json
import subprocess
from pathlib import Path

import pytest
from leaderboard_support import edit_results, make_run

from persona_eval.display.report import render_results
from persona_eval.errors import UsageError
from persona_eval.leaderboards import load_leaderboard, validation_errors
from persona_eval.leaderboards.build import build_leaderboard, sort_rows, write_leaderboard
from persona_eval.leaderboards.render import render_html, show_leaderboard
from persona_eval.pipeline.items import JudgeItem
from persona_eval.pipeline.score import score
from persona_eval.scoring.metrics import item_probabilities, prob_test_better, summarize
from persona_eval.taskfile.loading import discover_tasks, load_task, resolve_task

REPO = Path(__file__).resolve().parents[1]
CRITERIA = ("personalization", "quality", "clarity")


def record(item, criterion, order, winner, prob_a, judge="j"):
    return {"item_id": item, "criterion": criterion, "order": order, "winner": winner, "prob_a": prob_a,
            "unscored_reason": None if winner else "no verdict", "judge": judge}


# The hand-worked example: four items, three criteria (clarity has no P(A) anywhere).
#
#   item  criterion        baseline_first         test_first            P(test better)          paper outcome
#   a     personalization  B, P(A)=0.20 -> 0.80   A, P(A)=0.90 -> 0.90  (0.80+0.90)/2 = 0.85    test, test = TEST
#   a     quality          A, P(A)=0.60 -> 0.40   A, P(A)=0.70 -> 0.70  (0.40+0.70)/2 = 0.55    base, test = TIE
#   b     personalization  A, no P(A)             B, P(A)=0.30 -> 0.30  0.30 (one order only)   base, base = BASELINE
#   b     quality          B, P(A)=0.10 -> 0.90   A, no P(A)            0.90 (one order only)   test, test = TEST
#   c     personalization  unscored, P(A)=0.45    A, P(A)=0.65 -> 0.65  (0.55+0.65)/2 = 0.60    UNSCORED
#                          -> 0.55 (still counts)
#   c     quality          B, P(A)=0.25 -> 0.75   A, P(A)=0.75 -> 0.75  0.75                    TEST
#   d     personalization  B, no P(A)             A, no P(A)            left out                TEST
#   d     quality          A, no P(A)             B, no P(A)            left out                BASELINE
#   a-d   clarity          B,A / A,B / B,A / A,A, no P(A) anywhere      left out (all four)     T, B, T, TIE
#
# Weighted: P_w = (0.85 + 0.30 + 0.60) / 3 = 1.75/3 = 0.58333...   (3 items, d left out)
#           Q_w = (0.55 + 0.90 + 0.75) / 3 = 2.20/3 = 0.73333...   (3 items, d left out)
#           clarity: no item has a P(A): win rate None, 0 items, 4 left out
#           weighted dPQ = 100 * (1.75/3 + 2.20/3 - 1) = 100 * 0.95/3 = 31.666...
# Paper:    P = 2 wins (a, d) / (2 + 1 loss (b)) = 2/3, c unscored
#           Q = 2 wins (b, c) / (2 + 1 loss (d)) = 2/3, a a tie
#           dPQ = 100 * (2/3 + 2/3 - 1) = 33.333...
HAND = [
    record("a", "personalization", "baseline_first", "B", 0.20), record("a", "personalization", "test_first", "A", 0.90),
    record("a", "quality", "baseline_first", "A", 0.60), record("a", "quality", "test_first", "A", 0.70),
    record("b", "personalization", "baseline_first", "A", None), record("b", "personalization", "test_first", "B", 0.30),
    record("b", "quality", "baseline_first", "B", 0.10), record("b", "quality", "test_first", "A", None),
    record("c", "personalization", "baseline_first", None, 0.45), record("c", "personalization", "test_first", "A", 0.65),
    record("c", "quality", "baseline_first", "B", 0.25), record("c", "quality", "test_first", "A", 0.75),
    record("d", "personalization", "baseline_first", "B", None), record("d", "personalization", "test_first", "A", None),
    record("d", "quality", "baseline_first", "A", None), record("d", "quality", "test_first", "B", None),
]
for _item, (_first, _second) in {"a": ("B", "A"), "b": ("A", "B"), "c": ("B", "A"), "d": ("A", "A")}.items():
    HAND += [record(_item, "clarity", "baseline_first", _first, None), record(_item, "clarity", "test_first", _second, None)]

EXACT = {"rel": 1e-12, "abs": 1e-12}


def test_p_test_better_from_one_record():
    assert prob_test_better("test_first", 0.9) == 0.9
    assert prob_test_better("baseline_first", 0.2) == pytest.approx(0.8, **EXACT)
    for unusable in (None, "0.5", True, float("nan"), 1.5, -0.1):
        assert prob_test_better("test_first", unusable) is None
    with pytest.raises(ValueError):
        prob_test_better("sideways", 0.5)


def test_item_probabilities_by_hand():
    found = item_probabilities(HAND)
    assert found["a"]["personalization"] == pytest.approx(0.85, **EXACT)
    assert found["a"]["quality"] == pytest.approx(0.55, **EXACT)
    assert found["b"] == pytest.approx({"personalization": 0.30, "quality": 0.90}, **EXACT)  # one order each
    assert found["c"]["personalization"] == pytest.approx(0.60, **EXACT)  # the unscored record's P(A) counts
    assert "d" not in found  # no P(A) in either order: left out
    assert all("clarity" not in per_item for per_item in found.values())


def test_weighted_win_rates_and_dpq_by_hand():
    summary = summarize(HAND, criteria=CRITERIA, resamples=2000, seed=7)
    weighted = summary["weighted"]
    p, q, c = (weighted["criteria"][name] for name in CRITERIA)
    assert p["win_rate"] == pytest.approx(1.75 / 3, **EXACT) and (p["items"], p["items_without_prob_a"]) == (3, 1)
    assert q["win_rate"] == pytest.approx(2.20 / 3, **EXACT) and (q["items"], q["items_without_prob_a"]) == (3, 1)
    assert c == {"win_rate": None, "win_rate_ci95": None, "items": 0, "items_without_prob_a": 4}
    assert weighted["dpq"] == pytest.approx(100 * 0.95 / 3, **EXACT)
    assert "P(A)" in weighted["method"] and "\n" not in weighted["method"]
    assert summary["headline"] == "dpq"  # the default: the paper's metric leads


def test_the_paper_metric_is_unchanged_by_the_probabilities():
    summary = summarize(HAND, criteria=CRITERIA, resamples=2000, seed=7)
    p, q, c = (summary["criteria"][name] for name in CRITERIA)
    assert (p["test_wins"], p["baseline_wins"], p["ties"], p["unscored"]) == (2, 1, 0, 1)
    assert (q["test_wins"], q["baseline_wins"], q["ties"], q["unscored"]) == (2, 1, 1, 0)
    assert (c["test_wins"], c["baseline_wins"], c["ties"], c["unscored"]) == (2, 1, 1, 0)
    assert summary["dpq"] == pytest.approx(100 / 3, **EXACT)
    # Without any P(A) the paper's numbers, intervals and judge health are the very same.
    stripped = [{k: v for k, v in r.items() if k != "prob_a"} for r in HAND]
    plain = summarize(stripped, criteria=CRITERIA, resamples=2000, seed=7)
    for key in ("dpq", "dpq_ci95", "items", "criteria", "judge_health", "bootstrap", "headline"):
        assert plain[key] == summary[key], key
    assert plain["weighted"]["dpq"] is None
    assert all(row["win_rate"] is None and row["items"] == 0 for row in plain["weighted"]["criteria"].values())


def test_weighted_intervals_bracket_the_estimate_and_follow_the_seed():
    first = summarize(HAND, criteria=CRITERIA, resamples=2000, seed=7)["weighted"]
    again = summarize(HAND, criteria=CRITERIA, resamples=2000, seed=7)["weighted"]
    for name in ("personalization", "quality"):
        low, high = first["criteria"][name]["win_rate_ci95"]
        assert 0.0 <= low <= first["criteria"][name]["win_rate"] <= high <= 1.0
    low, high = first["dpq_ci95"]
    assert -100.0 <= low <= first["dpq"] <= high <= 100.0 and low < high
    # The resampled values lie between the smallest and largest item values.
    assert first["criteria"]["personalization"]["win_rate_ci95"][0] >= 0.30 - 1e-12
    assert first["criteria"]["personalization"]["win_rate_ci95"][1] <= 0.85 + 1e-12
    assert first == again
    # With four items the 2.5th and 97.5th percentiles land on the same few sums whatever
    # the seed; thirty items show that another seed draws other resamples, and that the
    # point estimate never depends on it.
    many = [record(f"m{k}", criterion, order, "A", (k * 7 % 30) / 30)
            for k in range(30) for criterion in ("personalization", "quality") for order in ("baseline_first", "test_first")
            if not (criterion == "quality" and order == "test_first" and k % 3 == 0)]
    seven, eight = (summarize(many, resamples=1000, seed=seed)["weighted"] for seed in (7, 8))
    assert seven["dpq"] == eight["dpq"] and seven["dpq_ci95"] != eight["dpq_ci95"]
    assert seven == summarize(many, resamples=1000, seed=7)["weighted"]
    assert summarize(HAND, criteria=CRITERIA, resamples=0)["weighted"]["dpq_ci95"] is None


def test_weighted_uses_the_same_bootstrap_draws_as_the_paper():
    # With every P(A) exactly 1 or 0 matching the verdicts and no ties or unscored pairs, each
    # item's P(test better) is its paper outcome (1 win, 0 loss): both bootstraps must agree.
    records = []
    outcomes = {"w1": ("B", "A"), "w2": ("B", "A"), "l1": ("A", "B"), "w3": ("B", "A"), "l2": ("A", "B")}
    for item, (first, second) in outcomes.items():
        for criterion in ("personalization", "quality"):
            records.append(record(item, criterion, "baseline_first", first, 1.0 if first == "A" else 0.0))
            records.append(record(item, criterion, "test_first", second, 1.0 if second == "A" else 0.0))
    summary = summarize(records, resamples=500, seed=3)
    assert summary["weighted"]["dpq"] == pytest.approx(summary["dpq"], **EXACT)
    assert summary["weighted"]["dpq_ci95"] == pytest.approx(summary["dpq_ci95"], **EXACT)
    for name in ("personalization", "quality"):
        assert summary["weighted"]["criteria"][name]["win_rate_ci95"] == pytest.approx(
            summary["criteria"][name]["win_rate_ci95"], **EXACT)


def test_a_criterion_without_any_probability_leaves_weighted_dpq_undefined():
    records = [r for r in HAND if r["criterion"] != "clarity"]
    records = [dict(r, prob_a=None) if r["criterion"] == "quality" else r for r in records]
    weighted = summarize(records, resamples=200)["weighted"]
    assert weighted["criteria"]["personalization"]["win_rate"] == pytest.approx(1.75 / 3, **EXACT)
    assert weighted["criteria"]["quality"]["win_rate"] is None
    assert weighted["dpq"] is None and weighted["dpq_ci95"] is None


# -- several judges: the headline pools every judge's probabilities -------------------------
#
#   item crit  j1 baseline_first   j1 test_first   j2 baseline_first   j2 test_first
#   x    P     P(A)=0.2 -> 0.8     0.6 -> 0.6      0.4 -> 0.6          none
#   x    Q     0.5 -> 0.5          0.5 -> 0.5      none                none
#   y    P     none                0.4 -> 0.4      0.0 -> 1.0          1.0 -> 1.0
#   y    Q     0.3 -> 0.7          0.9 -> 0.9      0.8 -> 0.2          0.2 -> 0.2
#
# Pooled (mean over every (judge, order) probability an item has):
#   P: x (0.8+0.6+0.6)/3 = 2/3, y (0.4+1.0+1.0)/3 = 0.8  -> P_w = (2/3 + 0.8)/2 = 0.73333...
#   Q: x (0.5+0.5)/2 = 0.5,     y (0.7+0.9+0.2+0.2)/4 = 0.5 -> Q_w = 0.5
#   weighted dPQ = 100 * (0.73333... + 0.5 - 1) = 23.333...
# (Not the mean of the judges' own P_w: j1 (0.7 + 0.4)/2 = 0.55, j2 (0.6 + 1.0)/2 = 0.8.)
# Per judge: j1 P_w 0.55, Q_w (0.5 + 0.8)/2 = 0.65; j2 P_w 0.8, Q_w 0.2 (y only, x left out).
PANEL = {
    "j1": [(("x", "personalization"), ("B", 0.2), ("A", 0.6)), (("x", "quality"), ("A", 0.5), ("A", 0.5)),
           (("y", "personalization"), ("A", None), ("B", 0.4)), (("y", "quality"), ("B", 0.3), ("A", 0.9))],
    "j2": [(("x", "personalization"), ("B", 0.4), (None, None)), (("x", "quality"), ("A", None), ("B", None)),
           (("y", "personalization"), ("B", 0.0), ("A", 1.0)), (("y", "quality"), ("A", 0.8), ("B", 0.2))],
}


def panel_judgments():
    out = {}
    for judge, rows in PANEL.items():
        out[judge] = []
        for (item, criterion), (first, p_first), (second, p_second) in rows:
            out[judge].append(record(item, criterion, "baseline_first", first, p_first, judge))
            out[judge].append(record(item, criterion, "test_first", second, p_second, judge))
    return out


def _score(task, judgments, resamples=300):
    items = [JudgeItem(id=i, prompt="p", persona="q") for i in ("x", "y")]
    responses = {(i.id, role): "word " * 3 for i in items for role in ("test", "baseline")}
    return score(task=task, labels=list(judgments), items=items, responses=responses, judgments=judgments, resamples=resamples)


def test_a_panel_pools_every_judges_probabilities():
    result = _score(resolve_task("demo"), panel_judgments())
    headline = result["metrics"]["weighted"]
    assert headline["criteria"]["personalization"]["win_rate"] == pytest.approx((2 / 3 + 0.8) / 2, **EXACT)
    assert headline["criteria"]["quality"]["win_rate"] == pytest.approx(0.5, **EXACT)
    assert headline["dpq"] == pytest.approx(100 * ((2 / 3 + 0.8) / 2 + 0.5 - 1), **EXACT)
    assert "pooled over judges j1, j2" in headline["method"]
    j1, j2 = result["per_judge"]["j1"]["weighted"], result["per_judge"]["j2"]["weighted"]
    assert j1["criteria"]["personalization"]["win_rate"] == pytest.approx(0.55, **EXACT)
    assert j1["criteria"]["quality"]["win_rate"] == pytest.approx(0.65, **EXACT)
    assert j2["criteria"]["personalization"]["win_rate"] == pytest.approx(0.8, **EXACT)
    j2_quality = j2["criteria"]["quality"]
    assert (j2_quality["items"], j2_quality["items_without_prob_a"]) == (1, 1)
    assert j2_quality["win_rate"] == pytest.approx(0.2, **EXACT)
    assert j2_quality["win_rate_ci95"] == pytest.approx([0.2, 0.2], **EXACT)  # one item: every resample is it
    assert "pooled" not in j1["method"]
    low, high = headline["dpq_ci95"]
    assert low <= headline["dpq"] <= high


def test_the_headline_comes_from_the_task():
    judgments = panel_judgments()
    demo = _score(resolve_task("demo"), judgments)
    assert demo["metrics"]["headline"] == "weighted_dpq"
    assert {block["headline"] for block in demo["per_judge"].values()} == {"weighted_dpq"}
    paper = _score(resolve_task("pe_beavertails"), judgments)
    assert paper["metrics"]["headline"] == "dpq"
    assert {block["headline"] for block in paper["per_judge"].values()} == {"dpq"}
    # The headline only picks what the report leads with; the numbers are the same.
    for key in ("dpq", "dpq_ci95", "criteria", "weighted"):
        assert demo["metrics"][key] == paper["metrics"][key]
    with pytest.raises(ValueError):
        summarize(HAND, headline="loudest")


# -- the task's report block and its hash --------------------------------------------------


def test_paper_tasks_lead_with_the_paper_metric_and_the_demo_with_the_weighted_one():
    tasks = discover_tasks()
    for name, path in tasks.items():
        task = load_task(path)
        expected = "weighted" if name == "demo" else "paper"
        assert task.spec.report.headline == expected, name
        assert ("report" in task.resolved()) == (name == "demo"), name


def test_a_default_report_block_leaves_the_task_hash_alone(tmp_path):
    source = (REPO / "tasks" / "demo" / "demo.yaml").read_text()
    assert "report:\n  headline: weighted\n" in source
    without = source.replace("report:\n  headline: weighted\n", "")
    data = REPO / "tasks" / "demo" / "data"
    hashes = {}
    for label, text in {"absent": without, "paper": source.replace("headline: weighted", "headline: paper"),
                        "weighted": source}.items():
        path = tmp_path / label / "demo.yaml"
        path.parent.mkdir()
        (path.parent / "data").symlink_to(data, target_is_directory=True)
        path.write_text(text)
        hashes[label] = load_task(path).task_hash
    assert hashes["absent"] == hashes["paper"]  # the default is never part of the hash
    assert hashes["weighted"] != hashes["absent"]


def test_a_bad_headline_is_a_usage_error_with_its_line(tmp_path):
    source = (REPO / "tasks" / "demo" / "demo.yaml").read_text().replace("headline: weighted", "headline: loudest")
    path = tmp_path / "demo.yaml"
    (tmp_path / "data").symlink_to(REPO / "tasks" / "demo" / "data", target_is_directory=True)
    path.write_text(source)
    with pytest.raises(UsageError) as caught:
        load_task(path)
    line = source.splitlines().index("  headline: loudest") + 1
    assert "report.headline" in str(caught.value) and caught.value.where.endswith(f":{line}")


# -- the report text ---------------------------------------------------------------------


def _printed(metrics: dict, per_judge: dict | None = None) -> list[str]:
    from rich.console import Console

    results = {
        "task": {"name": "hand"}, "split": "rejected", "persona_source": {"name": "gold"}, "model": "m", "baseline": "b",
        "strategies": {"test": "pt", "baseline": "baseline"}, "judges": list(per_judge or ["j"]), "judge_model": "jm",
        "metrics": metrics, "per_judge": per_judge or {"j": metrics}, "run_dir": "runs/x",
    }
    console = Console(record=True, width=200)
    render_results(results, console=console)
    return [line.rstrip() for line in console.export_text().splitlines()]


def _ties(letter: str, items: int = 4) -> list[dict]:
    """A judge that says ``letter`` in both orders (every pair a tie), with a P(A) per verdict."""
    out = []
    for k in range(items):
        for criterion in ("personalization", "quality"):
            p = 0.9 - 0.1 * k if letter == "A" else 0.1 + 0.05 * k
            out.append(record(f"i{k}", criterion, "baseline_first", letter, p))
            out.append(record(f"i{k}", criterion, "test_first", letter, p + (0.05 if criterion == "quality" else -0.05)))
    return out


def _line(lines: list[str], start: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(start))


def test_report_leads_with_the_weighted_dpq_and_explains_the_paper_one():
    metrics = summarize(_ties("A"), resamples=300, headline="weighted")
    lines = _printed(metrics)
    weighted = metrics["weighted"]
    lead = _line(lines, "weighted dPQ = ")
    ci = weighted["dpq_ci95"]
    assert lines[lead].startswith(f"weighted dPQ = {weighted['dpq']:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}]  over 4 items")
    assert lines[lead + 1] == "paper dPQ undefined: every comparison was a tie (the judge preferred position A in both orders)"
    # The table keeps the paper's rows and adds the weighted column and row.
    p_row = lines[_line(lines, "│ personalization")]
    assert "undefined" in p_row and f"{weighted['criteria']['personalization']['win_rate']:.3f}" in p_row
    assert "weighted dPQ" in lines[_line(lines, "│ weighted dPQ")] and "│ dPQ " in "\n".join(lines)


def test_report_explanation_follows_the_counts():
    lines = _printed(summarize(_ties("B"), resamples=50, headline="weighted"))
    assert "paper dPQ undefined: every comparison was a tie (the judge preferred position B in both orders)" in lines
    unscored = [dict(r, winner=None) for r in _ties("A")]
    lines = _printed(summarize(unscored, resamples=50, headline="weighted"))
    assert "paper dPQ undefined: every comparison was unscored (mostly: no verdict)" in lines
    # Only one criterion undecided: the line names it.
    mixed = [r for r in _ties("A") if r["criterion"] == "personalization"]
    for k in range(4):
        mixed += [record(f"i{k}", "quality", "baseline_first", "B", 0.3), record(f"i{k}", "quality", "test_first", "A", 0.8)]
    lines = _printed(summarize(mixed, resamples=50, headline="weighted"))
    assert "paper dPQ undefined: every personalization comparison was a tie (the judge picked the same position in both orders)" in lines


def test_report_with_the_paper_headline_gives_the_weighted_one_second():
    metrics = summarize(HAND, resamples=300, headline="paper")
    lines = _printed(metrics)
    lead = _line(lines, "dPQ = ")
    ci = metrics["dpq_ci95"]
    assert lines[lead].startswith(f"dPQ = +33.3 [{ci[0]:+.1f}, {ci[1]:+.1f}]  over 4 items")
    assert lines[lead + 1].startswith(f"weighted dPQ = {100 * 0.95 / 3:+.1f} [")
    # b and c have P(A) for both criteria, d for none: the weighted cells say how many items they cover.
    assert "(3 items)" in lines[_line(lines, "│ personalization")]


def test_report_without_any_probability_says_so():
    stripped = [{k: v for k, v in r.items() if k != "prob_a"} for r in HAND]
    lines = _printed(summarize(stripped, resamples=100, headline="weighted"))
    assert lines[_line(lines, "│ personalization")].endswith("n/a (no P(A)) │")
    assert lines[_line(lines, "│ weighted dPQ")].endswith("n/a (no P(A)) │")
    lead = _line(lines, "weighted dPQ = ")
    assert lines[lead].startswith("weighted dPQ = n/a (no P(A))  over 4 items")
    assert lines[lead + 1].startswith("paper dPQ = +33.3 [")
    paper = _printed(summarize(stripped, resamples=100))
    assert paper[_line(paper, "dPQ = ") + 1] == "weighted dPQ n/a (no P(A))"


def test_report_of_a_panel_shows_each_judges_weighted_numbers():
    result = _score(resolve_task("demo"), panel_judgments())
    lines = _printed(result["metrics"], result["per_judge"])
    text = "\n".join(lines)
    assert text.count("weighted dPQ") >= 4  # majority, j1, j2 rows and the lead line
    assert lines[_line(lines, "weighted dPQ = ")].startswith(f"weighted dPQ = {result['metrics']['weighted']['dpq']:+.1f}")


def test_report_of_older_results_has_no_weighted_column():
    metrics = summarize(HAND, resamples=50)
    del metrics["weighted"], metrics["headline"]
    lines = _printed(metrics)
    assert not any("weighted" in line for line in lines)
    assert lines[_line(lines, "dPQ = ")].startswith("dPQ = +33.3")


# -- leaderboards ------------------------------------------------------------------------


def _weighted(value, width=8.0):
    def edit(results):
        block = None if value is None else {"criteria": {}, "dpq": value, "dpq_ci95": [value - width, value + width],
                                            "method": "m"}
        for metrics in (results["metrics"], *results["per_judge"].values()):
            if block is None:
                metrics.pop("weighted", None)
            else:
                metrics["weighted"] = copy.deepcopy(block)
    return edit


@pytest.fixture
def weighted_runs(tmp_path):
    """Paper dPQ and weighted dPQ rank the models in opposite orders on the rejected split."""
    root = tmp_path / "runs"
    specs = [("hf:alpha", 20.0, 5.0, 1.0, -3.0), ("hf:beta", 35.0, -4.0, 2.0, 9.5), ("hf:gamma", None, 12.0, None, None)]
    for model, chosen, rejected, w_chosen, w_rejected in specs:
        slug = model.split(":")[1]
        for split, dpq, weighted in (("chosen", chosen, w_chosen), ("rejected", rejected, w_rejected)):
            run = make_run(root, f"{slug}-{split}", split=split, model=model, dpq=dpq)
            edit_results(run, _weighted(weighted))
    return root


def test_split_results_carry_the_weighted_dpq(weighted_runs, tmp_path):
    doc = build_leaderboard([weighted_runs], base=tmp_path)
    assert validation_errors(doc) == [] and doc["sort_by"] == "dpq"
    rows = {row["model"]: row for row in doc["groups"][0]["rows"]}
    beta = rows["hf:beta"]["splits"]["rejected"]
    assert (beta["dpq"], beta["weighted_dpq"], beta["weighted_dpq_ci95"]) == (-4.0, 9.5, [1.5, 17.5])
    gamma = rows["hf:gamma"]["splits"]["rejected"]  # a result from before the weighted block: null, not 0
    assert gamma["weighted_dpq"] is None and gamma["weighted_dpq_ci95"] is None
    assert [row["model"] for row in doc["groups"][0]["rows"]] == ["hf:gamma", "hf:alpha", "hf:beta"]


def test_sorting_by_the_weighted_dpq(weighted_runs, tmp_path):
    doc = build_leaderboard([weighted_runs], base=tmp_path, sort_by="weighted_dpq")
    assert doc["sort_by"] == "weighted_dpq"
    assert [row["model"] for row in doc["groups"][0]["rows"]] == ["hf:beta", "hf:alpha", "hf:gamma"]  # +9.5, -3, none
    # The gap stays the paper's: rejected dPQ - chosen dPQ.
    assert next(r for r in doc["groups"][0]["rows"] if r["model"] == "hf:beta")["gap"] == pytest.approx(-39.0)
    rows = doc["groups"][0]["rows"]
    assert [r["model"] for r in sort_rows(rows, "dpq")] == ["hf:gamma", "hf:alpha", "hf:beta"]
    with pytest.raises(UsageError):
        build_leaderboard([weighted_runs], sort_by="loudest")


def invoke(*args):
    from click.testing import CliRunner

    from persona_eval.cli import cli
    from persona_eval.contracts import plugin_manager

    if "leaderboard" not in cli.commands:
        plugin_manager.call_each("register_commands", cli=cli)
    separate = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    result = CliRunner(**separate).invoke(cli, [str(a) for a in args])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_the_cli_sort_option(weighted_runs, tmp_path):
    out = tmp_path / "lb.json"
    result = invoke("leaderboard", "build", weighted_runs, "-o", out, "--sort", "weighted_dpq")
    assert result.returncode == 0, result.stderr
    assert "sorted by weighted_dpq" in result.stdout
    doc = json.loads(out.read_text())
    doc["groups"][0]["rows"].reverse()  # show must sort, not trust the order on disk
    out.write_text(json.dumps(doc))
    shown = invoke("leaderboard", "show", out)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "rows sorted by weighted dPQ" in text
    positions = [text.index(name) for name in ("beta", "alpha", "gamma")]
    assert positions == sorted(positions), text
    for number in ("+9.5", "[+2,+18]", "-4.0", "[-16,+5]", "-39.0"):  # both metrics, with intervals, and the gap
        assert number in text, (number, text)
    assert invoke("leaderboard", "build", weighted_runs, "-o", tmp_path / "x.json", "--sort", "loudest").returncode == 2


def test_show_fits_eighty_columns(weighted_runs):
    from rich.console import Console

    doc = build_leaderboard([weighted_runs], sort_by="weighted_dpq")
    console = Console(record=True, width=80)
    show_leaderboard(doc, console)
    text = console.export_text()
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines())
    for number in ("+9.5", "[+2,+18]", "-4.0", "[-16,+5]", "-39.0", "+12.0"):
        assert number in text, (number, text)


def test_the_page_names_the_sort_metric_and_shows_both(weighted_runs, tmp_path):
    for by, label in (("dpq", "dPQ"), ("weighted_dpq", "weighted dPQ")):
        html = render_html(build_leaderboard([weighted_runs], base=tmp_path, sort_by=by), source_dir=tmp_path, out_dir=tmp_path)
        assert f"Rows are sorted by <strong>{label}</strong>" in html
        assert f"<h3>{label} with 95% intervals</h3>" in html
        assert 'data-key="wdpq-rejected"' in html and 'data-key="dpq-rejected"' in html
        assert "+9.5" in html and "[+1.5, +17.5]" in html and "n/a (no P(A))" in html


def test_old_leaderboards_stay_valid_and_the_new_fields_are_checked(weighted_runs, tmp_path):
    doc = build_leaderboard([weighted_runs], base=tmp_path, sort_by="weighted_dpq")
    old = copy.deepcopy(doc)
    del old["sort_by"]
    for row in old["groups"][0]["rows"]:
        for result in row["splits"].values():
            del result["weighted_dpq"], result["weighted_dpq_ci95"]
    assert validation_errors(old) == []
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert [r["model"] for r in sort_rows(load_leaderboard(path)["groups"][0]["rows"])] == ["hf:gamma", "hf:alpha", "hf:beta"]
    bad = copy.deepcopy(doc)
    bad["sort_by"] = "loudest"
    assert any(e.startswith("$.sort_by") for e in validation_errors(bad))
    bad = copy.deepcopy(doc)
    bad["groups"][0]["rows"][0]["splits"]["rejected"]["weighted_dpq"] = 140.0
    assert any("weighted_dpq" in e for e in validation_errors(bad))
    bad = copy.deepcopy(doc)
    bad["groups"][0]["rows"][0]["splits"]["rejected"]["weighted_dpq_ci95"] = [5.0, -5.0]
    assert any("weighted_dpq_ci95: low 5.0 is above high -5.0" in e for e in validation_errors(bad))
    write_leaderboard(doc, tmp_path / "new.json")


def test_the_demo_leaderboard_is_sorted_by_and_holds_the_weighted_dpq():
    doc = load_leaderboard(REPO / "leaderboards" / "demo.json")
    assert doc["sort_by"] == "weighted_dpq"
    assert "--sort weighted_dpq" in (REPO / "leaderboards" / "build_demo.sh").read_text()
    results = [result for group in doc["groups"] for row in group["rows"] for result in row["splits"].values()]
    assert results and all(r["weighted_dpq"] is not None and r["weighted_dpq_ci95"] is not None for r in results)
    assert all(r["dpq"] is None for r in results)  # the embedded judge ties every pair


def test_a_results_file_from_the_pipeline_feeds_the_leaderboard(tmp_path):
    """score() output, as results.json carries it, gives the builder its weighted numbers."""
    result = _score(resolve_task("demo"), panel_judgments())
    run = make_run(tmp_path / "runs", "panel", split="rejected")
    edit_results(run, lambda r: r.update(metrics=result["metrics"], per_judge=result["per_judge"]))
    doc = build_leaderboard([run], sort_by="weighted_dpq")
    [row] = doc["groups"][0]["rows"]
    assert row["splits"]["rejected"]["weighted_dpq"] == pytest.approx(result["metrics"]["weighted"]["dpq"])
