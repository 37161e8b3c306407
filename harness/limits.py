"""Every bound on what a user may hand the harness, in one table.

Numeric options (`NUMERIC`) are checked by the command line (`cli_options.bounded`, a click
type that fails with a one-line usage error, exit 2) and by the Python API
(`check_number`), both reading the same `Bound`, before any work starts. Text lengths
(`TEXT`) bound personas, prompts, specs and option values where they enter the pipeline.
Error lines are cut to `ERROR_LINE_CHARS` by `errors.PersonaEvalError`, so text echoed from
the user never floods the terminal.

This module sits at the bottom of the core (beside `errors`): every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from persona_eval.errors import UsageError


@dataclass(frozen=True)
class Bound:
    """An inclusive range for one numeric option, and why it is that range."""

    low: int | float
    high: int | float
    kind: type = int
    why: str = ""

    def describe(self) -> str:
        return f"{self.low}..{self.high}"


# name -> bound. Names are the options' names without dashes (click parameter names).
NUMERIC: dict[str, Bound] = {
    "bootstrap": Bound(0, 100_000, why="0 = no intervals; 100,000 resamples give a stable 95% interval, more only costs time"),
    "limit": Bound(0, 10_000_000, why="0 = all items; no dataset here is larger"),
    "seed": Bound(0, 2**32 - 1, why="numpy, torch and vLLM all take a 32-bit unsigned seed"),
    "port": Bound(0, 65_535, why="TCP ports (0 picks a free one)"),
    "max_batch": Bound(1, 4_096, why="requests generated together; more only exhausts memory"),
    "batch_wait_ms": Bound(0.0, 60_000.0, kind=float, why="a request waits at most a minute for company"),
    "k": Bound(0, 32, why="few-shot exemplars per prompt (0 = zero-shot); more overflow small contexts"),
    "max_attempts": Bound(1, 11, why="asks per item before giving up, as the task file's judge.max_attempts "
                          "(11: prometheus-eval's first ask and its 10 retries, as the paper ran it)"),
    "max_new_tokens": Bound(1, 32_768, why="no supported model writes more in one answer"),
    "temperature": Bound(0.0, 2.0, kind=float, why="the sampling range every backend accepts"),
    "max_response_chars": Bound(0, 1_000_000, why="0 = never clip; 1 MB is far past any context"),
    "min_count": Bound(0, 10_000_000, why="a count of personas (0 and 1 keep every word)"),
    "top": Bound(1, 10_000, why="words listed per side"),
    "max_steps": Bound(1, 100_000_000, why="optimizer steps"),
    "examples": Bound(0, 10, why="examples per leaderboard row"),
}


@dataclass(frozen=True)
class TextLimit:
    chars: int
    why: str


TEXT: dict[str, TextLimit] = {
    "persona": TextLimit(10_000, "a persona is a description of a user (the paper's are one sentence, ~150 characters)"),
    "prompt": TextLimit(200_000, "about 50,000 tokens, past the context of every model the harness runs"),
    "spec": TextLimit(2_000, "a model spec is a backend, a model and a few key=value options"),
    "option_value": TextLimit(1_000, "an option value is a word, a number, a path or a URL"),
}

#: The longest error message the harness prints (longer ones keep start and end); the place
#: (file:line) before it is kept whole up to half this again.
ERROR_LINE_CHARS = 300

#: Where a generator knows no tokenizer, a rendered input may be at most this many characters
#: per token of its context (a token is rarely more than 4 characters of text).
CHARS_PER_TOKEN_BOUND = 8


def preview(text: str, width: int = 40) -> str:
    """The start of user text for an error message, on one line."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def check_number(name: str, value, *, option: str | None = None):
    """`value` if it lies in NUMERIC[name] (None passes: the default), else a UsageError naming `option`."""
    bound = NUMERIC[name]
    label = option or name
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (bound.kind is int and not isinstance(value, int)):
        kind = "an integer" if bound.kind is int else "a number"
        raise UsageError(f"{label} must be {kind} in {bound.describe()}, not {preview(repr(value))}")
    if value != value or not bound.low <= value <= bound.high:  # NaN fails too
        raise UsageError(f"{label} {value} is out of range: {bound.describe()} ({bound.why})")
    return value


def bounded(name: str):
    """The click type of a numeric option: an integer or float range from NUMERIC[name].

    click is imported here, not at module level, so the Python API never needs it.
    """
    import click

    bound = NUMERIC[name]
    if bound.kind is int:
        return click.IntRange(int(bound.low), int(bound.high))

    class FiniteFloatRange(click.FloatRange):
        """click's FloatRange lets NaN through (every comparison with it is false); this one does not."""

        def convert(self, value, param, ctx):
            number = super().convert(value, param, ctx)
            if number != number:
                self.fail(f"{value!r} is not a number in the range {self.min}..{self.max}.", param, ctx)
            return number

    return FiniteFloatRange(float(bound.low), float(bound.high))


def check_text(name: str, text, *, what: str, where: str | None = None) -> None:
    """A UsageError naming `what` when `text` is longer than TEXT[name] characters."""
    if not isinstance(text, str):
        return
    limit = TEXT[name]
    if len(text) > limit.chars:
        raise UsageError(f"{what} is {len(text):,} characters long; the limit is {limit.chars:,} ({limit.why})", where=where)


def check_option_values(options: Mapping[str, Any] | None, *, what: str, numeric: bool = True) -> None:
    """Option values a user typed: numeric ones (`numeric`) in their `limits.NUMERIC` range, text ones not over-long."""
    for key, value in (options or {}).items():
        if numeric and key in NUMERIC:
            check_number(key, value, option=f"{what} {key}")
        elif key == "persona":
            check_text("persona", value, what=f"{what} {key}")
        elif key in ("retriever", "model"):
            check_text("spec", value, what=f"{what} {key}")
        else:
            check_text("option_value", value, what=f"{what} {key}")
