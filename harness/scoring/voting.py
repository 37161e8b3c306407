"""Majority vote across several judges, per item and criterion.

Each judge first turns its two verdicts (both orders) into one pair outcome, exactly as
`metrics.item_outcomes` does for a single judge: test, baseline, tie or unscored. The
vote then runs over those outcomes:

- an unscored outcome is an abstention: that judge has no vote for this item;
- an outcome held by strictly more than half of the voting judges wins (a tie can win
  this way too, when most judges were position-inconsistent);
- with no such majority (e.g. test / baseline / tie, or 1 test vs 1 baseline) the item
  is a tie: the judges disagree, which is what a tie means in the paper's metric;
- when every judge abstains the item is unscored.

Voting on pair outcomes rather than on raw A/B verdicts keeps each judge's
position-consistency check intact: a judge that flips with the order contributes a tie,
not half a win.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

from persona_eval.scoring.metrics import BASELINE, TEST, TIE, UNSCORED

RULE = (
    "per item and criterion: unscored judges abstain; an outcome held by more than half of the "
    "voting judges wins; no majority is a tie; all judges unscored is unscored"
)


def vote(outcomes: list[str]) -> str:
    """The majority outcome of several judges' outcomes for one item and criterion."""
    votes = [o for o in outcomes if o in (TEST, BASELINE, TIE)]
    if not votes:
        return UNSCORED
    (top, count), *_ = Counter(votes).most_common(1)
    return top if 2 * count > len(votes) else TIE


def majority_outcomes(
    per_judge: Mapping[str, Mapping[str, Mapping[str, str]]],
) -> dict[str, dict[str, str]]:
    """judge -> item -> criterion -> outcome  becomes  item -> criterion -> majority outcome.

    An item or criterion a judge never saw counts as that judge's abstention.
    """
    items: dict[str, set[str]] = {}
    for outcomes in per_judge.values():
        for item_id, per_item in outcomes.items():
            items.setdefault(item_id, set()).update(per_item)
    result: dict[str, dict[str, str]] = {}
    for item_id, criteria in items.items():
        result[item_id] = {
            criterion: vote([per_judge[j].get(item_id, {}).get(criterion, UNSCORED) for j in per_judge])
            for criterion in sorted(criteria)
        }
    return result


def agreement(per_judge: Mapping[str, Mapping[str, Mapping[str, str]]]) -> dict[str, float | int | None]:
    """How often all voting judges gave the same outcome (over items where two or more voted)."""
    majority = majority_outcomes(per_judge)
    shared = unanimous = 0
    for item_id, per_item in majority.items():
        for criterion in per_item:
            votes = [per_judge[j].get(item_id, {}).get(criterion, UNSCORED) for j in per_judge]
            votes = [v for v in votes if v != UNSCORED]
            if len(votes) >= 2:
                shared += 1
                unanimous += len(set(votes)) == 1
    return {"comparisons": shared, "unanimous": unanimous, "unanimous_share": unanimous / shared if shared else None}
