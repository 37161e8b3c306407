"""The `example/length` judge: a deterministic pairwise judge that looks only at length.

Personalization: a persona asking for brevity ("short", "concise", "3-item list", ...)
favours the shorter non-empty response, any other persona the longer one. Quality favours
the longer non-empty response. It never calls its generator, so it is instant and makes
a fine judge for tests and for checking position bias of the harness itself.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from persona_eval.interfaces import Generator, Judge
from persona_eval.records import GenParams, PairRequest, Verdict

BREVITY = re.compile(
    r"\b(short|shorter|concise|brief|briefly|terse|succinct|quick|minimal|to-the-point|to the point|"
    r"few words|one line|one sentence|bullet|[1-5]-item|[1-5] items|list of [1-5])\b",
    re.IGNORECASE,
)


def words(text: str) -> int:
    return len(text.split())


def wants_brevity(persona: str) -> bool:
    return bool(BREVITY.search(persona or ""))


class LengthJudge(Judge):
    name = "example/length"
    version = 1

    def __init__(self, generator: Generator | None = None, params: GenParams | None = None, max_attempts: int = 1):
        # The judge is model-free; the harness hands it a generator anyway, and it is ignored.
        self.generator = generator

    def identity(self) -> dict[str, Any]:
        # No model identity: the verdicts do not depend on the judge model.
        return {"judge": self.name, "version": self.version, "brevity_pattern": BREVITY.pattern}

    def _decide(self, pair: PairRequest) -> Verdict:
        a, b = words(pair.response_a), words(pair.response_b)
        if pair.criterion == "personalization" and wants_brevity(pair.persona):
            goal = "shorter"
        else:
            goal = "longer"
        if (a == 0) != (b == 0):
            winner = "A" if b == 0 else "B"
            why = "the other response is empty"
        elif a == b:
            # Equal lengths: a stable textual tie-break keeps the verdict independent of
            # position, so swapping the order flips the letter (identical texts give A twice: a tie).
            winner = "A" if pair.response_a <= pair.response_b else "B"
            why = "equal lengths, textual tie-break"
        elif goal == "shorter":
            winner = "A" if a < b else "B"
            why = "the persona asks for brevity"
        else:
            winner = "A" if a > b else "B"
            why = "longer is better for this criterion" if pair.criterion != "personalization" else "the persona wants detail"
        raw = f"{pair.criterion}: A has {a} words, B has {b}; prefer {goal} ({why}). [RESULT] {winner}"
        return Verdict(winner=winner, raw=raw)

    def compare(self, requests: Sequence[PairRequest]) -> list[Verdict]:
        return [self._decide(pair) for pair in requests]
