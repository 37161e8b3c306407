"""The plain data that flows between stages: examples, personas, requests, results, verdicts.

Everything here is a small dataclass that converts to and from JSON, because every
record ends up in a JSON Lines file and in cache keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ['Side', 'Position', 'Example', 'Persona', 'GenParams', 'GenRequest', 'GenResult', 'PairRequest', 'Verdict',
           'USAGE_SOURCES']

Side = Literal["test", "baseline"]
Position = Literal["A", "B"]


@dataclass(frozen=True)
class Example:
    """One preference item: a prompt, two responses and the personas behind them."""

    id: str
    prompt: str
    chosen: str = ""
    rejected: str = ""
    chosen_persona: str = ""
    rejected_persona: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def persona_for(self, split: str) -> str:
        return self.chosen_persona if split == "chosen" else self.rejected_persona


@dataclass
class Persona:
    text: str
    source: str
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    # Settings the paper's pipeline uses that older tasks never set. None means "not set":
    # they then stay out of `to_dict`, so the cache keys of every existing task are unchanged.
    min_new_tokens: int | None = None
    repetition_penalty: float | None = None

    def to_dict(self) -> dict[str, Any]:
        # Spelled out rather than `asdict` (a deep copy): this runs once per cache key.
        out = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
               "seed": self.seed, "stop": list(self.stop)}
        if self.min_new_tokens is not None:
            out["min_new_tokens"] = self.min_new_tokens
        if self.repetition_penalty is not None:
            out["repetition_penalty"] = self.repetition_penalty
        return out


@dataclass
class GenRequest:
    """One input for a generator: the user message and optional system text and reply prefix."""

    id: str
    prompt: str
    params: GenParams = field(default_factory=GenParams)
    system: str | None = None
    response_prefix: str = ""
    # True: `prompt` is already the model's whole input (e.g. the paper judge's fastchat
    # "mistral" string): a raw-completion backend sends it as it is, with no chat template.
    raw: bool = False

    def cache_input(self) -> dict[str, Any]:
        out = {
            "prompt": self.prompt,
            "system": self.system,
            "response_prefix": self.response_prefix,
            "params": self.params.to_dict(),
        }
        if self.raw:  # only when set, so every existing cache key stays as it was
            out["raw"] = True
        return out


# Where a token count comes from: the API's own `usage`, our tokenizer, or a characters-per-token estimate.
USAGE_SOURCES = ("api", "tokenizer", "estimated")


@dataclass
class GenResult:
    text: str
    finish_reason: str | None = None
    output_tokens: int | None = None
    # Tokens of the input as the backend counted it; `usage_source` is one of USAGE_SOURCES (None: unknown).
    input_tokens: int | None = None
    usage_source: str | None = None
    # Probabilities of named choices at the first generated position, where the backend has them.
    choice_probs: dict[str, float] | None = None
    cached: bool = False


@dataclass
class PairRequest:
    """One pairwise comparison as the judge sees it, in one order."""

    id: str
    criterion: str
    instruction: str
    rubric: str
    response_a: str
    response_b: str
    prompt: str = ""
    persona: str = ""

    def cache_input(self) -> dict[str, Any]:
        return asdict(self) | {"id": None}


@dataclass
class Verdict:
    winner: Position | None
    raw: str = ""
    prob_a: float | None = None
    unscored_reason: str | None = None
    attempts: int = 1
    # What the verdict cost: {"requests", "input_tokens", "output_tokens", "source"} summed over
    # every generator call behind it (re-asks included); None where the judge did not say.
    usage: dict[str, Any] | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Verdict":
        return cls(
            winner=data.get("winner"),
            raw=data.get("raw", ""),
            prob_a=data.get("prob_a"),
            unscored_reason=data.get("unscored_reason"),
            attempts=data.get("attempts", 1),
            usage=data.get("usage"),
        )
