"""What the stages pass along about the items of a run: the two roles and what a judge needs of an item."""

from __future__ import annotations

from dataclasses import dataclass

# The two answers to every item: the model under test and the baseline it is compared with.
ROLES = ("test", "baseline")


@dataclass(frozen=True)
class JudgeItem:
    """What the judge needs of one item besides the two responses."""

    id: str
    prompt: str
    persona: str
