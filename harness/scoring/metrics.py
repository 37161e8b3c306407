"""The paper's metric: pairwise outcomes in both orders, win rates, dPQ, intervals, judge health.

For one item and one criterion the judge sees (A = baseline, B = test) and (A = test,
B = baseline). Both verdicts are mapped back to sides; agreement means that side wins,
disagreement is a tie, and an unparseable verdict makes the pair *unscored* (excluded
and counted, never a loss).

    win_rate = test_wins / (test_wins + baseline_wins)          (ties excluded)
    dPQ      = 100 * (P_win + Q_win - 1)                         in [-100, 100]

A win rate with no decided items is undefined (None), and so is a dPQ built on it.

Beside the paper's metric, where the judge backend gives P(A), a probability-weighted
preference (the kind AlpacaEval 2 reports, less noisy than counting wins): per item
P(test better) is P(A) when the test answer is shown first and 1 - P(A) when it is shown
second, averaged over the orders that have one; a criterion's weighted win rate is the
mean over the items that have one, and

    weighted dPQ = 100 * (P_w + Q_w - 1)

with intervals from the very same bootstrap draws as dPQ. It is reported beside the
paper's dPQ, never instead of it; a task's ``report.headline`` only says which of the two
the report leads with (``headline`` in the metrics: ``dpq`` or ``weighted_dpq``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

ORDERS = ("baseline_first", "test_first")
CRITERIA = ("personalization", "quality")
TEST, BASELINE, TIE, UNSCORED = "test", "baseline", "tie", "unscored"
# A task's report.headline -> the metrics key the report leads with.
HEADLINES = {"paper": "dpq", "weighted": "weighted_dpq"}
WEIGHTED_METHOD = (
    "probability-weighted: per item P(test better) = P(A) with the test answer first, 1 - P(A) with it second, "
    "averaged over the orders that have a P(A) (scored or not); win rate = mean over items that have one; "
    "weighted dPQ = 100 x (P_w + Q_w - 1); intervals from the same bootstrap draws as dPQ"
)


def side_of(order: str, winner: str | None) -> str | None:
    """Map a raw A/B verdict in one order back to 'test' or 'baseline'."""
    if winner not in ("A", "B"):
        return None
    if order == "baseline_first":
        return BASELINE if winner == "A" else TEST
    if order == "test_first":
        return TEST if winner == "A" else BASELINE
    raise ValueError(f"unknown order {order!r}")


def pair_outcome(side_baseline_first: str | None, side_test_first: str | None) -> str:
    if side_baseline_first is None or side_test_first is None:
        return UNSCORED
    return side_baseline_first if side_baseline_first == side_test_first else TIE


@dataclass
class CriterionCounts:
    test_wins: int = 0
    baseline_wins: int = 0
    ties: int = 0
    unscored: int = 0

    @property
    def win_rate(self) -> float | None:
        decided = self.test_wins + self.baseline_wins
        return self.test_wins / decided if decided else None

    def add(self, outcome: str) -> None:
        if outcome == TEST:
            self.test_wins += 1
        elif outcome == BASELINE:
            self.baseline_wins += 1
        elif outcome == TIE:
            self.ties += 1
        else:
            self.unscored += 1


def dpq(p_win: float | None, q_win: float | None) -> float | None:
    if p_win is None or q_win is None:
        return None
    return 100.0 * (p_win + q_win - 1.0)


def item_outcomes(judgments: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """item id -> criterion -> outcome, from judgment records of one judge.

    Each record needs ``item_id``, ``criterion``, ``order`` and ``winner`` (raw A/B or None).
    """
    sides: dict[tuple[str, str], dict[str, str | None]] = defaultdict(dict)
    for record in judgments:
        sides[(record["item_id"], record["criterion"])][record["order"]] = side_of(record["order"], record.get("winner"))
    outcomes: dict[str, dict[str, str]] = defaultdict(dict)
    for (item_id, criterion), by_order in sides.items():
        outcomes[item_id][criterion] = pair_outcome(by_order.get("baseline_first"), by_order.get("test_first"))
    return dict(outcomes)


def _resample_blocks(n_items: int, resamples: int, seed: int) -> Iterator[tuple[int, Any]]:
    """(first resample, item indices) blocks of the bootstrap's draws, items resampled with replacement.

    Resamples are drawn a block of rows at a time (about 2**20 indices), not as one
    resamples x items array: memory stays flat in the number of items (1000 x 10,000
    int64 indices alone are 80 MB). The draws are the very same as in one call, and the
    paper's metric and the weighted one see the same draws for the same items and seed.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    step = max(1, (1 << 20) // n_items)
    for start in range(0, resamples, step):
        yield start, rng.integers(0, n_items, size=(min(step, resamples - start), n_items))


def _percentile_interval(values) -> list[float] | None:
    """The 2.5th and 97.5th percentiles of the defined (non-NaN) resampled values."""
    import numpy as np

    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def _ratio_bootstrap(numerators: dict[str, Any], denominators: dict[str, Any], resamples: int, seed: int) -> dict[str, Any]:
    """Percentile intervals of per-criterion ratios sum(numerator) / sum(denominator) over resampled items, and of dPQ.

    Both win rates are such ratios: the paper's is test wins over decided pairs, the
    weighted one the sum of P(test better) over the items that have one. A resample whose
    denominator is zero leaves that ratio undefined (NaN, dropped from its percentiles).
    """
    import numpy as np

    criteria = list(numerators)
    n_items = len(next(iter(numerators.values()))) if numerators else 0
    if not n_items or resamples <= 0:
        return {}
    top = {c: np.empty(resamples, dtype=np.float64) for c in criteria}
    bottom = {c: np.empty(resamples, dtype=np.float64) for c in criteria}
    for start, picks in _resample_blocks(n_items, resamples, seed):
        for criterion in criteria:
            top[criterion][start : start + len(picks)] = numerators[criterion][picks].sum(axis=1)
            bottom[criterion][start : start + len(picks)] = denominators[criterion][picks].sum(axis=1)
    rates = {}
    for criterion in criteria:
        with np.errstate(invalid="ignore", divide="ignore"):
            rates[criterion] = np.where(bottom[criterion] > 0, top[criterion] / np.maximum(bottom[criterion], 1), np.nan)
    result = {c: _percentile_interval(rates[c]) for c in criteria}
    if "personalization" in rates and "quality" in rates:
        result["dpq"] = _percentile_interval(100.0 * (rates["personalization"] + rates["quality"] - 1.0))
    return result


def _bootstrap(outcomes: dict[str, dict[str, str]], criteria: Sequence[str], resamples: int, seed: int) -> dict[str, Any]:
    """Intervals of the paper's win rates (test wins over decided pairs) and dPQ."""
    import numpy as np

    ids = sorted(outcomes)
    wins = {c: np.array([outcomes[i].get(c) == TEST for i in ids], dtype=np.int64) for c in criteria}
    decided = {c: np.array([outcomes[i].get(c) in (TEST, BASELINE) for i in ids], dtype=np.int64) for c in criteria}
    return _ratio_bootstrap(wins, decided, resamples, seed)


# -- the probability-weighted preference ----------------------------------------------------


def prob_test_better(order: str, prob_a: Any) -> float | None:
    """P(test better) from one record's P(A): P(A) when the test answer was A, else 1 - P(A).

    None when the record has no usable P(A) (missing, not a number, NaN, outside [0, 1]).
    """
    if isinstance(prob_a, bool) or not isinstance(prob_a, (int, float)):
        return None
    prob_a = float(prob_a)
    if not math.isfinite(prob_a) or not 0.0 <= prob_a <= 1.0:
        return None
    if order == "test_first":
        return prob_a
    if order == "baseline_first":
        return 1.0 - prob_a
    raise ValueError(f"unknown order {order!r}")


def item_probabilities(judgments: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """item id -> criterion -> P(test better), the mean over every record that has a P(A).

    A record's ``prob_a`` counts whether or not its verdict was scored: an unscored record
    (no verdict in the text, say) that still carries P(A) adds its probability, because the
    judge's preference between the two letters is known even where its text is not. With
    one judge that is the mean over the (one or two) orders with a P(A); pass several
    judges' records together and it is the mean over every (judge, order) probability the
    item has. An item and criterion with no P(A) at all is absent.
    """
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for record in judgments:
        value = prob_test_better(record["order"], record.get("prob_a"))
        if value is not None:
            found[(record["item_id"], record["criterion"])].append(value)
    probabilities: dict[str, dict[str, float]] = defaultdict(dict)
    for (item_id, criterion), values in found.items():
        probabilities[item_id][criterion] = math.fsum(values) / len(values)
    return dict(probabilities)


def _weighted_bootstrap(
    ids: Sequence[str], probabilities: dict[str, dict[str, float]], criteria: Sequence[str], resamples: int, seed: int
) -> dict[str, Any]:
    """Percentile intervals of the weighted win rates and weighted dPQ (items resampled).

    Each resample draws from all the items, as the paper's bootstrap does (the same draws
    for the same items and seed); a drawn item without a P(A) for a criterion adds
    nothing to that criterion, as an unscored pair adds nothing to a win rate.
    """
    import numpy as np

    values = {c: np.array([probabilities.get(i, {}).get(c, 0.0) for i in ids], dtype=np.float64) for c in criteria}
    present = {c: np.array([c in probabilities.get(i, {}) for i in ids], dtype=np.int64) for c in criteria}
    return _ratio_bootstrap(values, present, resamples, seed)


def weighted_preference(
    judgments: Sequence[dict[str, Any]],
    items: Iterable[str],
    *,
    criteria: Sequence[str] = CRITERIA,
    resamples: int = 1000,
    seed: int = 0,
    judges: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``weighted`` block of the metrics: weighted win rates, weighted dPQ, intervals.

    ``items`` are the items the paper's metric counts (the bootstrap resamples them);
    ``judgments`` the records whose ``prob_a`` is read (`item_probabilities`). With two or
    more ``judges`` the records are every judge's, pooled: an item's P(test better) is the
    mean over every (judge, order) probability it has, and ``method`` says so.
    """
    probabilities = item_probabilities(judgments)
    ids = sorted(set(items) | set(probabilities))
    intervals = _weighted_bootstrap(ids, probabilities, criteria, resamples, seed)
    per_criterion: dict[str, Any] = {}
    for criterion in criteria:
        values = [probabilities[i][criterion] for i in ids if criterion in probabilities.get(i, {})]
        rate = math.fsum(values) / len(values) if values else None
        per_criterion[criterion] = {
            "win_rate": rate,
            "win_rate_ci95": intervals.get(criterion) if rate is not None else None,
            "items": len(values),
            # Left out for want of a P(A) in either order: counted, never scored as 0.5.
            "items_without_prob_a": len(ids) - len(values),
        }
    p = per_criterion.get("personalization", {}).get("win_rate")
    q = per_criterion.get("quality", {}).get("win_rate")
    method = WEIGHTED_METHOD
    if len(judges) > 1:
        method += (f"; pooled over judges {', '.join(judges)}: an item's P(test better) is the mean over every "
                   "(judge, order) probability it has")
    weighted_dpq = dpq(p, q)
    return {
        "criteria": per_criterion,
        "dpq": weighted_dpq,
        "dpq_ci95": intervals.get("dpq") if weighted_dpq is not None else None,
        "method": method,
    }


def headline_key(headline: str) -> str:
    """The metrics key a task's ``report.headline`` (paper or weighted) leads the report with."""
    try:
        return HEADLINES[headline]
    except KeyError:
        raise ValueError(f"unknown headline {headline!r} (expected one of: {', '.join(HEADLINES)})") from None


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    import numpy as np

    if len(xs) < 3:
        return None
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def judge_health(
    judgments: Sequence[dict[str, Any]],
    outcomes: dict[str, dict[str, str]],
    lengths: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """Position consistency, first-position bias and length effects of one judge.

    ``tie_rate`` is over scored pairs (ties / (wins + ties + losses)): the share of items on
    which the verdict flipped with the order. ``position_a_win_share`` is over single
    scored verdicts. For a majority vote pass every judge's verdicts: the position share
    is then pooled over all judges.
    """
    scored = [j for j in judgments if j.get("winner") in ("A", "B")]
    pairs = [o for per_item in outcomes.values() for o in per_item.values()]
    decided_pairs = [o for o in pairs if o in (TEST, BASELINE, TIE)]
    reasons: dict[str, int] = defaultdict(int)
    for j in judgments:
        if j.get("winner") not in ("A", "B"):
            reasons[j.get("unscored_reason") or "no verdict"] += 1
    health: dict[str, Any] = {
        "verdicts": len(judgments),
        "unscored_verdicts": len(judgments) - len(scored),
        "unscored_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "tie_rate": (sum(o == TIE for o in decided_pairs) / len(decided_pairs)) if decided_pairs else None,
        "position_a_win_share": (sum(j["winner"] == "A" for j in scored) / len(scored)) if scored else None,
    }
    if lengths:
        test_lengths = [v["test"] for v in lengths.values()]
        base_lengths = [v["baseline"] for v in lengths.values()]
        health["mean_words_test"] = sum(test_lengths) / len(test_lengths) if test_lengths else None
        health["mean_words_baseline"] = sum(base_lengths) / len(base_lengths) if base_lengths else None
        xs, ys = [], []
        for item_id, per_item in outcomes.items():
            if item_id not in lengths:
                continue
            for outcome in per_item.values():
                if outcome in (TEST, BASELINE):
                    xs.append(lengths[item_id]["test"] - lengths[item_id]["baseline"])
                    ys.append(1.0 if outcome == TEST else -1.0)
        health["length_win_correlation"] = _pearson(xs, ys)
    return health


def summarize(
    judgments: Sequence[dict[str, Any]],
    *,
    lengths: dict[str, dict[str, int]] | None = None,
    criteria: Sequence[str] = CRITERIA,
    resamples: int = 1000,
    seed: int = 0,
    headline: str = "paper",
) -> dict[str, Any]:
    """Everything the report shows for one judge's judgments."""
    return summarize_outcomes(
        item_outcomes(judgments), verdicts=judgments, lengths=lengths, criteria=criteria, resamples=resamples, seed=seed,
        headline=headline,
    )


def summarize_outcomes(
    outcomes: dict[str, dict[str, str]],
    *,
    verdicts: Sequence[dict[str, Any]] = (),
    lengths: dict[str, dict[str, int]] | None = None,
    criteria: Sequence[str] = CRITERIA,
    resamples: int = 1000,
    seed: int = 0,
    headline: str = "paper",
    judges: Sequence[str] = (),
) -> dict[str, Any]:
    """Counts, win rates, dPQ, bootstrap intervals, the weighted preference and judge health.

    ``outcomes`` is item -> criterion -> test/baseline/tie/unscored (one judge's, or a
    majority vote's); ``verdicts`` are the raw judgment records behind them (for the
    position and unscored-reason parts of judge health, and the P(A)s of the ``weighted``
    block: for a majority vote every judge's records, pooled, with ``judges`` naming
    them). ``headline`` is the task's ``report.headline``: ``paper`` or ``weighted``.
    """
    lead = headline_key(headline)
    per_criterion: dict[str, Any] = {}
    for criterion in criteria:
        counts = CriterionCounts()
        for per_item in outcomes.values():
            counts.add(per_item.get(criterion, UNSCORED))
        scored = counts.test_wins + counts.baseline_wins + counts.ties
        per_criterion[criterion] = {
            "test_wins": counts.test_wins,
            "baseline_wins": counts.baseline_wins,
            "ties": counts.ties,
            "unscored": counts.unscored,
            "win_rate": counts.win_rate,
            "tie_rate": counts.ties / scored if scored else None,
        }
    intervals = _bootstrap(outcomes, criteria, resamples, seed)
    for criterion in criteria:
        per_criterion[criterion]["win_rate_ci95"] = intervals.get(criterion)
    p = per_criterion.get("personalization", {}).get("win_rate")
    q = per_criterion.get("quality", {}).get("win_rate")
    return {
        "dpq": dpq(p, q),
        "dpq_ci95": intervals.get("dpq"),
        "items": len(outcomes),
        "criteria": per_criterion,
        "weighted": weighted_preference(verdicts, outcomes, criteria=criteria, resamples=resamples, seed=seed, judges=judges),
        "headline": lead,
        "judge_health": judge_health(verdicts, outcomes, lengths),
        "bootstrap": {"resamples": resamples, "seed": seed, "confidence": 0.95, "method": "percentile, items resampled"},
    }
