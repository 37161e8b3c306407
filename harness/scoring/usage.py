"""Token usage and prices: what a run will cost (the dry-run plan) and what it did cost (``results.json``).

Pure functions and one small accumulator, no I/O but reading the user's price file:

- token counts: `estimate_tokens` (a stated `CHARS_PER_TOKEN` characters per token, for
  backends that count nothing), `call_usage` (one generator call: the backend's counts where
  it gave them, estimated where not), `add_usage` (sums such counts: a verdict's re-asks and
  probes), `weakest_source` (a sum is only as exact as its least exact part);
- prices, which always come from the user and never from this package: ``--price
  MODEL=IN_PER_1M:OUT_PER_1M`` (`parse_price`) and the ``prices:`` YAML file named by
  ``$PERSONA_EVAL_PRICES`` (`read_price_file`), merged by `load_prices`; `price_for` finds
  the price of a model spec and `Price.cost` turns tokens into dollars;
- `UsageTally`: what the stages of a run spent, per stage and model, and `UsageTally.block`,
  the ``usage`` block of ``results.json``. Work served by the result cache or resumed from the
  run directory is counted as such, never as spent.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from persona_eval.errors import UsageError

# Natural English averages about four characters a token in the GPT and Llama tokenizers;
# used only where no tokenizer or API count is at hand, and the result is marked "estimated".
CHARS_PER_TOKEN = 4

PRICES_ENV = "PERSONA_EVAL_PRICES"

# Least exact first: a sum holding one estimated part is an estimate.
_SOURCE_ORDER = ("estimated", "tokenizer", "api")


def estimate_tokens(text: str | None) -> int:
    """Tokens in `text` at `CHARS_PER_TOKEN` characters a token (rounded up; 0 for no text)."""
    return -(-len(text) // CHARS_PER_TOKEN) if text else 0


def request_chars(request: Any) -> int:
    """Characters of a `GenRequest` the model reads: system text, prompt and reply prefix."""
    return len(request.prompt or "") + len(getattr(request, "system", None) or "") + len(getattr(request, "response_prefix", "") or "")


def estimate_request_tokens(request: Any) -> int:
    return -(-request_chars(request) // CHARS_PER_TOKEN)


def weakest_source(sources: Iterable[str | None]) -> str | None:
    """The least exact of the given usage sources ("estimated" < "tokenizer" < "api"); None for none."""
    ranks = [_SOURCE_ORDER.index(s) for s in sources if s in _SOURCE_ORDER]
    return _SOURCE_ORDER[min(ranks)] if ranks else None


def call_usage(request: Any, result: Any) -> dict[str, Any]:
    """Usage of one generator call: {"requests": 1, "input_tokens", "output_tokens", "source"}.

    The backend's counts where it gave them (`GenResult.input_tokens`/`output_tokens`, from its
    `usage_source`); a count it did not give is estimated from the text, and the call is then
    marked "estimated". Both counts without a source were counted by the backend: "tokenizer".
    """
    input_tokens, output_tokens = getattr(result, "input_tokens", None), getattr(result, "output_tokens", None)
    source = getattr(result, "usage_source", None) or "tokenizer"
    if input_tokens is None:
        input_tokens, source = estimate_request_tokens(request), "estimated"
    if output_tokens is None:
        output_tokens, source = estimate_tokens(getattr(result, "text", "")), "estimated"
    return {"requests": 1, "input_tokens": int(input_tokens), "output_tokens": int(output_tokens), "source": source}


def add_usage(total: Mapping[str, Any] | None, part: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Two usage dicts summed (requests and tokens added, the weaker source kept); None + None is None."""
    if not total:
        return dict(part) if part else None
    if not part:
        return dict(total)
    return {
        "requests": int(total.get("requests") or 0) + int(part.get("requests") or 0),
        "input_tokens": int(total.get("input_tokens") or 0) + int(part.get("input_tokens") or 0),
        "output_tokens": int(total.get("output_tokens") or 0) + int(part.get("output_tokens") or 0),
        "source": weakest_source((total.get("source"), part.get("source"))),
    }


# ---- prices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """Dollars per million input and output tokens, as the user gave them."""

    input_per_1m: float
    output_per_1m: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_1m + output_tokens * self.output_per_1m) / 1_000_000

    def to_dict(self) -> dict[str, float]:
        return {"input_per_1m": self.input_per_1m, "output_per_1m": self.output_per_1m}


def _dollars(value: Any, what: str, where: str | None = None) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or number > 1_000_000:
        raise UsageError(f"{what}: expected dollars per million tokens (a number from 0 to 1,000,000), got {str(value)[:40]!r}",
                         where=where)
    return number


def parse_price(text: str, option: str = "--price") -> tuple[str, Price]:
    """``MODEL=IN_PER_1M:OUT_PER_1M`` -> (model spec, price), e.g. ``openai:gpt-4o=2.5:10``.

    The model is everything before the last ``=`` (a spec's own options hold ``=`` too).
    """
    model, equals, amounts = str(text).strip().rpartition("=")
    parts = amounts.split(":")
    if not equals or not model.strip() or len(parts) != 2:
        raise UsageError(f"{option} {str(text)[:80]!r}: expected MODEL=IN_PER_1M:OUT_PER_1M, e.g. openai:gpt-4o=2.5:10")
    return model.strip(), Price(_dollars(parts[0], f"{option} {model.strip()!r} input"), _dollars(parts[1], f"{option} {model.strip()!r} output"))


def parse_prices(values: Iterable[str], option: str = "--price") -> dict[str, Price]:
    """Every ``--price`` value; giving one model twice is an error."""
    prices: dict[str, Price] = {}
    for text in values:
        model, price = parse_price(text, option)
        if model in prices:
            raise UsageError(f"{option}: {model!r} is given twice")
        prices[model] = price
    return prices


def read_price_file(path: str | os.PathLike) -> dict[str, Price]:
    """The ``prices:`` mapping of a YAML file: ``{MODEL: {input_per_1m: N, output_per_1m: N}}``.

    Errors name the file and line: ``prices.yaml:3: ...``.
    """
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the price file (${PRICES_ENV}): {getattr(exc, 'strerror', None) or exc}", where=str(path)) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UsageError(f"invalid YAML in the price file: {getattr(exc, 'problem', None) or exc}", where=where) from exc

    def where(*keys: str) -> str:
        node, line = root, 1
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                break
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        return f"{path}:{line}"

    if not isinstance(data, dict) or not isinstance(data.get("prices"), dict):
        raise UsageError("a price file holds one mapping, prices: {MODEL: {input_per_1m: N, output_per_1m: N}}", where=where("prices"))
    prices: dict[str, Price] = {}
    for model, entry in data["prices"].items():
        at = where("prices", str(model))
        if not isinstance(model, str) or not model.strip():
            raise UsageError(f"prices: a model spec must be text, not {model!r}", where=at)
        if not isinstance(entry, dict) or set(entry) != {"input_per_1m", "output_per_1m"}:
            got = ", ".join(sorted(map(str, entry))) if isinstance(entry, dict) else type(entry).__name__
            raise UsageError(f"prices.{model}: expected exactly input_per_1m and output_per_1m, got {got or 'nothing'}", where=at)
        prices[model.strip()] = Price(
            _dollars(entry["input_per_1m"], f"prices.{model}.input_per_1m", where("prices", model, "input_per_1m")),
            _dollars(entry["output_per_1m"], f"prices.{model}.output_per_1m", where("prices", model, "output_per_1m")),
        )
    return prices


def load_prices(values: Iterable[str] = (), env: Mapping[str, str] | None = None) -> dict[str, Price]:
    """The prices the user gave: the ``$PERSONA_EVAL_PRICES`` file, then ``--price`` values over it."""
    env = os.environ if env is None else env
    path = (env.get(PRICES_ENV) or "").strip()
    prices = read_price_file(path) if path else {}
    return {**prices, **parse_prices(values)}


def price_for(prices: Mapping[str, Price] | None, spec: str) -> Price | None:
    """The price of a model spec: given for the spec as written, else for the spec without its options."""
    if not prices:
        return None
    return prices.get(spec) or prices.get(spec.split(",", 1)[0])


# ---- what a run spent -------------------------------------------------------------------------


@dataclass
class StageUsage:
    """One stage and model: records produced, where they came from, what the new ones cost."""

    records: int = 0
    cached: int = 0  # served by the result cache (or an identical input earlier in the run)
    resumed: int = 0  # read back from the run directory
    requests: int = 0  # generator calls sent (a verdict's re-asks and probes each count)
    input_tokens: int = 0
    output_tokens: int = 0
    sources: set = field(default_factory=set)
    seconds: float = 0.0


class UsageTally:
    """Accumulates usage per (stage, model spec) while the stages run; `block` writes it out."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], StageUsage] = {}

    def row(self, stage: str, model: str) -> StageUsage:
        return self.rows.setdefault((stage, model), StageUsage())

    def add(self, stage: str, model: str, *, cached: bool, usage: Mapping[str, Any] | None) -> None:
        """One record: a cached one costs nothing; a new one adds its calls and tokens."""
        row = self.row(stage, model)
        row.records += 1
        if cached:
            row.cached += 1
            return
        usage = usage or {}
        row.requests += int(usage.get("requests") or 0)
        row.input_tokens += int(usage.get("input_tokens") or 0)
        row.output_tokens += int(usage.get("output_tokens") or 0)
        row.sources.add(usage.get("source"))

    def add_resumed(self, stage: str, model: str, count: int) -> None:
        row = self.row(stage, model)
        row.records += count
        row.resumed += count

    def add_seconds(self, stage: str, model: str, seconds: float) -> None:
        self.row(stage, model).seconds += seconds

    def block(self, prices: Mapping[str, Price] | None = None, stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``usage`` block: per stage and model, and a total; cost only where a price is known.

        `stats` are the generators' own statistics by spec (``results.generator_stats``); their
        ``retries`` go on the row of a spec used in one stage only (a generator's count cannot
        be split between stages) and always into the total.
        """
        stats = stats or {}
        stages_of: dict[str, int] = {}
        for _, model in self.rows:
            stages_of[model] = stages_of.get(model, 0) + 1
        out: dict[str, Any] = {}
        total = {"requests": 0, "cached": 0, "resumed": 0, "input_tokens": 0, "output_tokens": 0}
        cost, priced, unpriced = 0.0, {}, []
        for (stage, model), row in self.rows.items():
            entry: dict[str, Any] = {
                "records": row.records, "requests": row.requests, "cached": row.cached, "resumed": row.resumed,
                "input_tokens": row.input_tokens, "output_tokens": row.output_tokens,
                "source": weakest_source(row.sources), "seconds": round(row.seconds, 2),
            }
            retries = (stats.get(model) or {}).get("retries") if isinstance(stats.get(model), dict) else None
            if isinstance(retries, int) and stages_of[model] == 1:
                entry["retries"] = retries
            price = price_for(prices, model)
            if price is not None:
                entry["cost"] = round(price.cost(row.input_tokens, row.output_tokens), 6)
                cost += entry["cost"]
                priced[model] = price.to_dict()
            elif row.input_tokens or row.output_tokens:
                unpriced.append(model)
            out.setdefault(stage, {})[model] = entry
            for key in total:
                total[key] += entry[key]
        retries_total = sum(s["retries"] for s in stats.values() if isinstance(s, dict) and isinstance(s.get("retries"), int))
        summary: dict[str, Any] = {**total, "retries": retries_total}
        if priced:
            summary["cost"] = round(cost, 6)
            if unpriced:
                summary["unpriced"] = sorted(set(unpriced))
        out["total"] = summary
        if priced:
            out["prices"] = priced
        return out
