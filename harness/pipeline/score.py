"""Stage 4, score: judgment records to the paper's metric, per judge and as a majority of several.

`scoring.metrics.summarize` turns one judge's records into win/tie/loss counts, win rates
with bootstrap intervals, dPQ, the probability-weighted preference (``weighted``, from the
judges' P(A)) and judge health; with several judges the majority vote (`scoring.voting`)
becomes the headline and each judge stays under ``per_judge``. A majority vote has no
P(A) of its own, so the headline's ``weighted`` block pools every judge's probabilities:
an item's P(test better) is the mean over all the (judge, order) probabilities it has.
Every metrics dict names the number the report leads with (``headline``: ``dpq`` or
``weighted_dpq``), from the task's ``report.headline``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from persona_eval.pipeline.items import ROLES, JudgeItem
from persona_eval.scoring.metrics import item_outcomes, summarize, summarize_outcomes
from persona_eval.scoring.voting import RULE, agreement, majority_outcomes


def response_lengths(items: Sequence[JudgeItem], responses: Mapping[tuple[str, str], str]) -> dict[str, dict[str, int]]:
    return {item.id: {role: len(responses[(item.id, role)].split()) for role in ROLES} for item in items}


def score(
    *,
    task,
    labels: Sequence[str],
    items: Sequence[JudgeItem],
    responses: Mapping[tuple[str, str], str],
    judgments: Mapping[str, Sequence[dict[str, Any]]],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``metrics`` (the headline: the only judge, or the majority of several) and ``per_judge``."""
    lengths = response_lengths(items, responses)
    criteria = tuple(task.spec.judge.criteria)
    headline = task.spec.report.headline
    per_judge = {
        label: summarize(judgments.get(label, []), lengths=lengths, criteria=criteria, resamples=resamples, seed=seed,
                         headline=headline)
        for label in labels
    }
    if len(labels) == 1:
        return {"metrics": per_judge[labels[0]], "per_judge": per_judge}
    outcomes = {label: item_outcomes(judgments.get(label, [])) for label in labels}
    pooled = [r for label in labels for r in judgments.get(label, [])]
    majority = summarize_outcomes(
        majority_outcomes(outcomes), verdicts=pooled, lengths=lengths, criteria=criteria, resamples=resamples, seed=seed,
        headline=headline, judges=list(labels),
    )
    majority["voting"] = {"judges": list(labels), "rule": RULE, **agreement(outcomes)}
    return {"metrics": majority, "per_judge": per_judge}
