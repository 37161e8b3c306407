"""PI accuracy: can a judge tell, from a persona, which response it was inferred for?

For every pair and each of its personas (chosen and rejected) a judge model sees the
prompt, the two responses and the persona, and names the response this user would
prefer. Each question is asked in both orders (target response first, then second).
A persona is right when the judge names the response it was inferred for: the chosen
response for the chosen persona, the rejected one for the rejected persona.

    accuracy(side) = mean over items of the item's mean correctness over its parseable orders
    standard error = sample standard deviation of those item means / sqrt(items)

Chance is 0.5. Where the backend gives next-token probabilities (`choice_probs`) the
answer is whichever of A and B is more probable after "Answer: Response"; otherwise the
generated text is parsed, and an answer naming neither (or both) is *unparseable*:
excluded from the accuracy and reported as a share.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest
from persona_eval.errors import UsageError
from persona_eval.hashing import stable_hash

STAGE = "pi_accuracy"
SIDES = ("chosen", "rejected")
ORDERS = ("target_first", "target_second")

SYSTEM_PROMPT = "You match users to the responses they prefer. Answer with a single letter."
QUESTION_TEMPLATE = (
    "A user with the persona below asked the prompt and was shown two responses.\n\n"
    "Persona: {persona}\n\n"
    "Prompt: {prompt}\n\n"
    "Response A: {response_a}\n\n"
    "Response B: {response_b}\n\n"
    "Which response would this user prefer? Answer with A or B."
)
PROBE_PREFIX = "Answer: Response"

_RESPONSE_LETTER = re.compile(r"\bresponse\s*\(?([AB])\)?(?![A-Za-z])", re.IGNORECASE)
_LEADING_LETTER = re.compile(r"^(?:(?i:answer)\s*[:\-]?\s*)?[\(\[\*\"']*([AB])(?![A-Za-z])")


def parse_choice(text: str) -> str | None:
    """'A' or 'B' from a judge's answer, or None when it names neither or both."""
    text = text.strip()
    lead = _LEADING_LETTER.match(text)
    # "A good answer is ..." starts with the article, not with a verdict.
    if lead and not (lead.group(1) == "A" and re.match(r"\s+[a-z]", text[lead.end():])):
        return lead.group(1).upper()
    named = {m.group(1).upper() for m in _RESPONSE_LETTER.finditer(text)}
    if len(named) == 1:
        return named.pop()
    return None


@dataclass
class PIItem:
    id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_persona: str
    rejected_persona: str


@dataclass
class PIQuestion:
    item_id: str
    side: str  # whose persona: chosen or rejected
    order: str  # target_first: the response the persona was inferred for is A
    request: GenRequest

    @property
    def target(self) -> str:
        return "A" if self.order == "target_first" else "B"


class PIJudge:
    """Asks a generator which response a persona prefers, by log-probabilities or by text."""

    def __init__(self, generator: Generator, *, mode: str = "auto", max_new_tokens: int = 8, max_response_chars: int = 2000):
        if mode not in ("auto", "logprobs", "text"):
            raise UsageError(f"--mode must be auto, logprobs or text, got {mode!r}")
        self.generator = generator
        self.max_response_chars = max_response_chars
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
        if mode == "auto":
            mode = "logprobs" if generator.choice_probs([], ["A", "B"]) is not None else "text"
        elif mode == "logprobs" and generator.choice_probs([], ["A", "B"]) is None:
            raise UsageError("--mode logprobs needs a backend with log-probabilities (e.g. hf); use --mode text")
        self.mode = mode
        self.preferred_batch_size = getattr(generator, "preferred_batch_size", 8)

    def identity(self) -> dict[str, Any]:
        return {
            "generator": self.generator.identity(),
            "mode": self.mode,
            "template": stable_hash([SYSTEM_PROMPT, QUESTION_TEMPLATE, PROBE_PREFIX], 16),
            "params": self.params.to_dict(),
            "max_response_chars": self.max_response_chars,
        }

    def _clip(self, text: str) -> str:
        text = text.strip()
        limit = self.max_response_chars
        return text[:limit].rstrip() + " [...]" if limit and len(text) > limit else text

    def questions(self, items: Sequence[PIItem], sides: Sequence[str] = SIDES) -> list[PIQuestion]:
        out = []
        for item in items:
            for side in sides:
                persona = item.chosen_persona if side == "chosen" else item.rejected_persona
                target, other = (item.chosen, item.rejected) if side == "chosen" else (item.rejected, item.chosen)
                for order in ORDERS:
                    a, b = (target, other) if order == "target_first" else (other, target)
                    prompt = QUESTION_TEMPLATE.format(
                        persona=persona.strip(), prompt=self._clip(item.prompt), response_a=self._clip(a), response_b=self._clip(b)
                    )
                    request = GenRequest(
                        id=f"{item.id}/{side}/{order}", prompt=prompt, params=self.params, system=SYSTEM_PROMPT,
                        response_prefix=PROBE_PREFIX if self.mode == "logprobs" else "",
                    )
                    out.append(PIQuestion(item.id, side, order, request))
        return out

    def answer(self, requests: Sequence[GenRequest]) -> list[dict[str, Any]]:
        if self.mode == "logprobs":
            probs = self.generator.choice_probs(list(requests), ["A", "B"])
            out = []
            for p in probs or []:
                prob_a = float(p["A"])
                choice = None if prob_a == 0.5 else ("A" if prob_a > 0.5 else "B")
                out.append({"choice": choice, "prob_a": prob_a, "raw": ""})
            return out
        results = self.generator.generate(list(requests))
        return [{"choice": parse_choice(r.text), "prob_a": None, "raw": r.text} for r in results]


def _mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def score(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy per side from answer records {item_id, side, order, choice, prob_a}."""
    report: dict[str, Any] = {"chance": 0.5}
    for side in SIDES:
        rows = [r for r in records if r["side"] == side]
        if not rows:
            continue
        per_item: dict[str, list[float]] = {}
        per_item_prob: dict[str, list[float]] = {}
        by_order: dict[str, list[float]] = {o: [] for o in ORDERS}
        unparseable = 0
        first_position = 0
        for r in rows:
            target = "A" if r["order"] == "target_first" else "B"
            if r.get("prob_a") is not None:
                p_target = r["prob_a"] if target == "A" else 1.0 - r["prob_a"]
                per_item_prob.setdefault(r["item_id"], []).append(p_target)
            if r["choice"] not in ("A", "B"):
                unparseable += 1
                per_item.setdefault(r["item_id"], [])
                continue
            correct = float(r["choice"] == target)
            per_item.setdefault(r["item_id"], []).append(correct)
            by_order[r["order"]].append(correct)
            first_position += int(r["choice"] == "A")
        item_means = [sum(v) / len(v) for v in per_item.values() if v]
        accuracy, se = _mean_se(item_means)
        parsed = len(rows) - unparseable
        entry = {
            "accuracy": accuracy,
            "stderr": se,
            "items": len(per_item),
            "items_scored": len(item_means),
            "answers": len(rows),
            "unparseable": unparseable,
            "unparseable_share": unparseable / len(rows),
            "accuracy_by_order": {o: (sum(v) / len(v) if v else None) for o, v in by_order.items()},
            "first_position_share": first_position / parsed if parsed else None,
        }
        if per_item_prob:
            prob_mean, prob_se = _mean_se([sum(v) / len(v) for v in per_item_prob.values()])
            entry["mean_prob_target"] = prob_mean
            entry["mean_prob_target_stderr"] = prob_se
        report[side] = entry
    return report


def evaluate(
    items: Sequence[PIItem],
    judge: PIJudge,
    *,
    cache=None,
    progress: bool = True,
    sides: Sequence[str] = SIDES,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ask every question (cached by judge identity and exact input) and score the answers."""
    from persona_eval.display.progress import Progress
    from persona_eval.pipeline.cached_map import cached_map
    from persona_eval.storage.cache import ResultCache

    cache = cache if cache is not None else ResultCache()
    questions = judge.questions(items, sides)
    records: list[dict[str, Any] | None] = [None] * len(questions)
    with Progress(progress) as bar:
        task = bar.add(f"PI accuracy ({judge.mode})", len(questions))

        def on_result(index: int, answer: dict[str, Any], cached: bool) -> None:
            q = questions[index]
            records[index] = {"item_id": q.item_id, "side": q.side, "order": q.order, "target": q.target, **answer, "cached": cached}
            bar.advance(task)

        stats = cached_map(
            stage=STAGE,
            identity=judge.identity(),
            inputs=[q.request for q in questions],
            payload=lambda r: {**r.cache_input(), "mode": judge.mode},
            compute=judge.answer,
            encode=lambda a: a,
            decode=lambda d: d,
            cache=cache,
            batch_size=max(1, judge.preferred_batch_size),
            on_result=on_result,
        )
    done = [r for r in records if r is not None]
    report = score(done)
    report["mode"] = judge.mode
    report["judge"] = judge.identity()
    report["requests"] = stats
    return report, done


def items_from_records(records: Sequence[tuple[str, dict[str, Any]]], fields: dict[str, str], *, id_field: str | None = "id",
                       limit: int | None = None) -> list[PIItem]:
    """PIItems from persona-augmented records; every field must be non-empty text (errors name file:line)."""
    from persona_eval.rendering.conversations import flatten_conversation

    items = []
    if limit:
        records = records[:limit]
    for index, (where, record) in enumerate(records):
        values = {}
        for role, key in fields.items():
            value = record.get(key)
            if isinstance(value, list):
                value = flatten_conversation(value, where=where)
            if not isinstance(value, str) or not value.strip():
                raise UsageError(f"field {key!r} ({role}) is missing or empty", where=where)
            values[role] = value
        raw_id = record.get(id_field) if id_field else None
        items.append(PIItem(id=str(raw_id) if raw_id not in (None, "") else f"row-{index}", **values))
    if not items:
        raise UsageError("no items to score")
    return items


def items_from_examples(examples) -> list[PIItem]:
    items = []
    for e in examples:
        missing = [name for name in ("chosen", "rejected", "chosen_persona", "rejected_persona") if not getattr(e, name).strip()]
        if missing:
            raise UsageError(f"item {e.id!r} has no {', '.join(missing)}: PI accuracy needs both responses and both personas")
        items.append(PIItem(e.id, e.prompt, e.chosen, e.rejected, e.chosen_persona, e.rejected_persona))
    return items


def render_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("persona", "accuracy", "± s.e.", "items", "unparseable", "target first", "target second", "P(target)",
                  title=f"PI accuracy (chance 0.5, mode {report.get('mode')})")

    def fmt(x):
        return "-" if x is None else f"{x:.3f}"

    for side in SIDES:
        entry = report.get(side)
        if not entry:
            continue
        table.add_row(
            side, fmt(entry["accuracy"]), fmt(entry["stderr"]), str(entry["items_scored"]),
            f"{entry['unparseable']} ({entry['unparseable_share']:.0%})",
            fmt(entry["accuracy_by_order"]["target_first"]), fmt(entry["accuracy_by_order"]["target_second"]),
            fmt(entry.get("mean_prob_target")),
        )
    Console().print(table)
