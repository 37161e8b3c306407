"""The dry-run plan: what `run`, `judge RUN_DIR` and `infer` would do and spend, doing none of it.

`plan_run` resolves a run exactly as `Run.execute` does before its first write (task, split,
specs, judges and their options, persona source, every rendered input, the context-length
check, the run-directory check), builds every generator and judge (no weights load: backends
load lazily) and then counts instead of computing: the records the run directory already
holds (a resumed run), the inputs the result cache already holds (looked up by the very cache
keys the stages use, through a read-only connection that creates no file), identical inputs
computed once, and what is left. Items not generated yet get placeholder responses for the
judge plan: each stands for the output of one generation input, so duplicates still count
once; their judgments are new by construction. `plan_rejudge` does the same for ``judge
RUN_DIR`` (`run.prepare_rejudge`); ``infer --dry-run`` (`persona_inference.dry_run`) plans
with the helpers here (`open_cache`, `Lookups`, `input_tokens`, `finish_plan`, `emit_plan`).
A backend whose `generate` only reads a file (``dry_run_answers``, the `file:` backend) is
asked for its responses, so the judge plan of imported outputs sees the real texts.

Input tokens are counted by the generator's own tokenizer where it has one at hand without
downloading or loading weights (`count_input_tokens`, e.g. hf), on at most `TOKENIZER_SAMPLE`
inputs per stage and scaled by characters beyond that; otherwise estimated at
`scoring.usage.CHARS_PER_TOKEN` characters a token. Output tokens are an upper bound
(``max_new_tokens`` per call; a verdict read from P(A) reads one position). Costs appear only
where the user gave a price. Nothing here writes: no run directory, no cache entry.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from persona_eval.contracts import registry
from persona_eval.contracts.factories import build_generator, build_persona_source
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenRequest, PairRequest, Persona
from persona_eval.hashing import stable_hash
from persona_eval.models.fingerprint import memo_read_only, unprepared_folders
from persona_eval.pipeline.generate import ROLE_OPTIONS, check_context_lengths, check_resumable, slim_generation
from persona_eval.pipeline.items import ROLES, JudgeItem
from persona_eval.pipeline.judge import JUDGE_CHUNK_ITEMS, judge_identity, pair_payload, pair_requests, record_key, slim_judgment
from persona_eval.pipeline.personas import personas_stage, test_examples
from persona_eval.scoring.usage import CHARS_PER_TOKEN, price_for, request_chars
from persona_eval.storage.cache import NullCache, ResultCache, cache_keys
from persona_eval.storage.jsonl import GENERATION_KEY, JUDGMENT_KEY, read_keyed

# Persona sources that only read the task or the user's file: the plan asks them for the
# personas. The others (inferred, retrieved) compute (a PI model, an embedding index), so the
# plan renders their inputs with empty personas and says so.
PLANNED_PERSONA_SOURCES = ("gold", "user", "precomputed")

# Inputs per stage counted by a tokenizer; beyond this the count is scaled by characters.
TOKENIZER_SAMPLE = 256

PLACEHOLDER = "\x00not generated yet:"


# ---- reading without writing ------------------------------------------------------------------


class ReadOnlyCache(ResultCache):
    """The result cache opened read-only: `get_many` as the stages look up, and no file created.

    A database closed cleanly has no write-ahead log, and is opened immutable (SQLite then
    creates no ``-wal``/``-shm`` file beside it); one in use by a running writer is opened
    read-only through the log files that writer keeps.
    """

    def __init__(self, path: Path):  # noqa: D107 - no ResultCache.__init__: it creates the database
        self.path = Path(path)
        self._lock = threading.Lock()
        mode = "ro" if Path(f"{self.path}-wal").exists() else "ro&immutable=1"
        self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True, check_same_thread=False)

    def get_many(self, keys):
        try:
            return super().get_many(keys)
        except sqlite3.DatabaseError:  # an empty or foreign file: it holds nothing of ours
            return {}

    def put_many(self, stage, items):
        raise RuntimeError("the dry-run cache is read-only")


def _cache_folder() -> Path:
    """`storage.files.cache_dir` without creating it (a plan creates no folder)."""
    override = os.environ.get("PERSONA_EVAL_CACHE")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("persona-eval"))


def open_cache(use_cache: bool, cache_path: str | None) -> tuple[ResultCache, dict[str, Any]]:
    """(a read-only cache, what the plan says of it); a cache file that does not exist holds nothing."""
    if not use_cache:
        return NullCache(), {"used": False}
    path = Path(cache_path) if cache_path else _cache_folder() / "results.sqlite"
    if not path.is_file():
        return NullCache(), {"used": True, "path": str(path), "exists": False}
    return ReadOnlyCache(path), {"used": True, "path": str(path), "exists": True}


# ---- counting tokens ------------------------------------------------------------------------


def input_tokens(generator: Any, requests: Sequence[GenRequest]) -> tuple[int, str]:
    """Input tokens of `requests` and how they were found ("tokenizer", "tokenizer, sampled", "estimated")."""
    if not requests:
        return 0, "none"
    total_chars = sum(request_chars(r) for r in requests)
    count = getattr(generator, "count_input_tokens", None)
    if callable(count):
        step = max(1, len(requests) // TOKENIZER_SAMPLE)
        sample = list(requests[::step])[:TOKENIZER_SAMPLE]
        counts = count(sample)
        if counts is not None and len(counts) == len(sample):
            if len(sample) == len(requests):
                return int(sum(counts)), "tokenizer"
            chars = sum(request_chars(r) for r in sample) or 1
            return round(total_chars * sum(counts) / chars), "tokenizer, sampled"
    return -(-total_chars // CHARS_PER_TOKEN), "estimated"


def _has_probabilities(generator: Any) -> bool:
    """Whether the backend implements `choice_probs` (asking it would load the model)."""
    own = getattr(type(generator), "choice_probs", None)
    return own is not None and own is not Generator.choice_probs


# ---- rows -----------------------------------------------------------------------------------


def _row(stage: str, label: str, model: str, *, calls: int, new: int, cached: int, resumed: int) -> dict[str, Any]:
    return {"stage": stage, "label": label, "model": model, "calls": calls, "new": new, "cached": cached, "resumed": resumed,
            "input_tokens": 0, "output_tokens": 0}


def _price_rows(rows: list[dict[str, Any]], prices: Mapping[str, Any]) -> dict[str, Any]:
    """Cost on every priced row; the total over all rows."""
    total = {key: sum(row[key] for row in rows) for key in ("calls", "new", "cached", "resumed", "input_tokens", "output_tokens")}
    cost, priced, unpriced = 0.0, {}, []
    for row in rows:
        price = price_for(prices, row["model"])
        if price is not None:
            row["cost"] = round(price.cost(row["input_tokens"], row["output_tokens"]), 6)
            cost += row["cost"]
            priced[row["model"]] = price.to_dict()
        elif row["new"] and not row.get("replay"):
            unpriced.append(row["model"])
    if priced:
        total["cost"] = round(cost, 6)
        if unpriced:
            total["unpriced"] = sorted(set(unpriced))
    return {"total": total, **({"prices": priced} if priced else {})}


class Lookups:
    """Cache lookups as `cached_map` makes them: a hit, an input computed earlier in the run, or new."""

    def __init__(self, cache: ResultCache, use_cache: bool):
        self.cache = cache
        # Inputs this run computes are in the cache for every later lookup, unless --no-cache.
        self.remember = use_cache
        self.computed: dict[str, set[str]] = {}

    def split(self, stage: str, keys: Sequence[str], lookup: bool = True) -> tuple[list[str], dict[str, Any], list[int]]:
        """(`keys`, the cache's values for the hits, indices of the inputs to compute) for one `cached_map` call."""
        hits = self.cache.get_many(set(keys)) if lookup and keys else {}
        earlier = self.computed.setdefault(stage, set())
        seen: set[str] = set()
        new = []
        for index, key in enumerate(keys):
            if key in hits or key in earlier or key in seen:
                continue
            seen.add(key)
            new.append(index)
        if self.remember:
            earlier.update(seen)
        return list(keys), hits, new


# ---- the generate stage -----------------------------------------------------------------------


def _plan_generation(run, examples, personas, requests, lookups: Lookups, known: bool):
    """Rows of both roles, and each (item, role)'s response: real where known, else a placeholder."""
    specs = {"test": run.model, "baseline": run.baseline}
    path = run.run_dir / "generations.jsonl"
    done = dict(read_keyed(path, GENERATION_KEY, transform=slim_generation, what="generation", skip_torn_tail=True))
    rows, responses, bounds = [], {}, {}
    for role in ROLES:
        generator = build_generator(specs[role], option=ROLE_OPTIONS[role])
        identity = generator.identity()
        role_requests = requests[role]
        if known:
            check_resumable(path, role, examples, personas, role_requests, done)
        todo = [i for i, ex in enumerate(examples) if (ex.id, role) not in done]
        for i, example in enumerate(examples):
            bounds[(example.id, role)] = role_requests[i].params.max_new_tokens
            if (example.id, role) in done:
                responses[(example.id, role)] = done[(example.id, role)]["response"]
        keys, hits, new = lookups.split("generate", cache_keys("generate", identity, (role_requests[i].cache_input() for i in todo)),
                                        lookup=known)
        by_key: dict[str, str] = {}
        new_requests = [role_requests[todo[j]] for j in new]
        answered = None
        if new_requests and getattr(generator, "dry_run_answers", False):
            # A backend that only reads a file (file:) answers now: the judge plan sees the real responses.
            answered = [result.text for result in generator.generate(new_requests)]
        for n, j in enumerate(new):
            by_key[keys[j]] = answered[n] if answered is not None else PLACEHOLDER + keys[j]
        for j, index in enumerate(todo):
            key = keys[j]
            text = hits[key]["text"] if key in hits else by_key.get(key, PLACEHOLDER + key)
            responses[(examples[index].id, role)] = text
        row = _row("generate", f"{role} ({run.strategies[role]})", specs[role], calls=len(examples), new=len(new),
                   cached=len(todo) - len(new), resumed=len(examples) - len(todo))
        row["input_tokens"], row["input_source"] = input_tokens(generator, new_requests)
        if getattr(generator, "dry_run_answers", False):
            row["replay"] = True  # a file's responses: nothing is spent, so no price is missing
        if answered is not None:
            row["output_tokens"] = -(-sum(len(text) for text in answered) // CHARS_PER_TOKEN)
            row["output_source"] = "estimated from the file's responses"
        else:
            row["output_tokens"] = sum(r.params.max_new_tokens for r in new_requests)
            row["output_source"] = "upper bound (max_new_tokens)"
        rows.append(row)
    return rows, responses, bounds


# ---- the judge stage ------------------------------------------------------------------------


def _judge_requests(judge, pair: PairRequest, bound: int) -> tuple[list[GenRequest], int, int]:
    """(the requests behind one verdict without re-asks, most output tokens, probe input tokens added).

    A judge without `first_request` (not a pairwise judge) is planned as one request of the
    pair's texts and `bound` (the task's judge ``max_new_tokens``) output tokens.
    """
    generator = getattr(judge, "generator", None)
    first = getattr(judge, "first_request", None)
    params = getattr(judge, "params", None)
    written = bool(getattr(judge, "written", True))
    probes = bool(getattr(judge, "use_logprobs", False)) and _has_probabilities(generator)
    if not callable(first) or params is None:
        text = "".join((pair.instruction, pair.rubric, pair.response_a, pair.response_b, pair.prompt))
        return [GenRequest(id=pair.id, prompt=text)], bound, 0
    request = first(pair)
    if not written and probes:
        return [request], 1, 0
    # A written verdict is followed by a P(A) probe where the backend has probabilities:
    # the same input again, with the written part carried over as its reply prefix.
    if probes:
        return [request, request], params.max_new_tokens + 1, params.max_new_tokens
    return [request], params.max_new_tokens, 0


def _blank(pair: PairRequest) -> PairRequest:
    """The pair with its placeholder responses emptied (their tokens are counted at their bound)."""
    a, b = pair.response_a.startswith(PLACEHOLDER), pair.response_b.startswith(PLACEHOLDER)
    if not (a or b):
        return pair
    return replace(pair, response_a="" if a else pair.response_a, response_b="" if b else pair.response_b)


def _plan_judging(task, choices, judges, items: Sequence[JudgeItem], responses, bounds, out_dir: Path,
                  lookups: Lookups) -> list[dict[str, Any]]:
    path = out_dir / "judgments.jsonl"
    existing = list(read_keyed(path, JUDGMENT_KEY, required=("item_id", "criterion", "order"), transform=slim_judgment,
                               what="judgment", skip_torn_tail=True).values())
    criteria = list(task.spec.judge.criteria)
    rows = []
    for choice in choices:
        judge = judges[choice.label]
        identity = judge_identity(judge, task)
        judge_key = stable_hash(identity, 16)
        done = {record_key(r) for r in existing if r.get("judge") == choice.label and r.get("judge_key") == judge_key}
        per = {name: {"calls": 0, "new": 0, "cached": 0, "resumed": 0} for name in criteria}
        new_requests: list[GenRequest] = []
        output_tokens = extra_tokens = requests_per_verdict = 0
        for start in range(0, len(items), JUDGE_CHUNK_ITEMS):
            chunk = items[start : start + JUDGE_CHUNK_ITEMS]
            pairs = pair_requests(task, chunk, responses)
            for key, _ in pairs:
                per[key["criterion"]]["calls"] += 1
                per[key["criterion"]]["resumed"] += record_key(key) in done
            todo = [(k, p) for k, p in pairs if record_key(k) not in done]
            keys, hits, new = lookups.split("judge", cache_keys("judge", identity, (pair_payload(e) for e in todo)))
            fresh = set(new)
            for j, (key, pair) in enumerate(todo):
                per[key["criterion"]]["new" if j in fresh else "cached"] += 1
            for j in new:
                key, pair = todo[j]
                sent, most, carried = _judge_requests(judge, _blank(pair), task.spec.judge.generation.max_new_tokens)
                requests_per_verdict = max(requests_per_verdict, len(sent))
                new_requests.extend(sent)
                output_tokens += most
                # A response not generated yet counts at its most tokens (max_new_tokens), in every request.
                missing = sum(bounds.get((key["item_id"], role), 0) for role in ROLES
                              if str(responses.get((key["item_id"], role), "")).startswith(PLACEHOLDER))
                extra_tokens += carried + len(sent) * missing
        generator = getattr(judge, "generator", None) or build_generator(choice.model, option="--judge-model")
        counted, source = input_tokens(generator, new_requests)
        row = _row("judge", choice.label, choice.model, calls=sum(c["calls"] for c in per.values()),
                   new=sum(c["new"] for c in per.values()), cached=sum(c["cached"] for c in per.values()),
                   resumed=sum(c["resumed"] for c in per.values()))
        row.update(input_tokens=counted + extra_tokens, input_source=source, output_tokens=output_tokens,
                   output_source="upper bound (max_new_tokens)", criteria=per,
                   requests_per_call=requests_per_verdict or 1, max_attempts=int(getattr(judge, "max_attempts", 1) or 1))
        rows.append(row)
    return rows


# ---- the plans --------------------------------------------------------------------------------


def _personas(run, notes: list[str]):
    """(examples, personas, skipped, whether the personas are the run's own) without computing any."""
    name = registry.persona_sources.entry(run.persona_source_name).name
    if name in PLANNED_PERSONA_SOURCES:
        _, examples, personas, skipped = personas_stage(run.task, run.split, run.persona_source_name,
                                                        run.options.persona_source_options, run.limit)
        return examples, personas, skipped, True
    examples = test_examples(run.task, run.limit)
    # Built (its options checked, as the run would) but not asked: asking computes.
    build_persona_source(run.persona_source_name, run.task, **run.options.persona_source_options)
    notes.append(f"personas: the {name!r} source computes its personas (a model or an index), which a dry run does not: "
                 "inputs are counted with empty personas, so their tokens are a lower bound and no generation is "
                 "looked up in the cache")
    return examples, [Persona(text="", source=name) for _ in examples], [], False


def plan_run(options, *, prices: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plan of `persona-eval run` with these `RunOptions`; writes nothing (not even the file-hash memo)."""
    with memo_read_only():
        return _plan_run(options, prices)


def _plan_run(options, prices: Mapping[str, Any] | None) -> dict[str, Any]:
    from persona_eval.pipeline.run import Run

    # Run() itself opens (and so creates) the result cache: the plan opens its own, read-only.
    run = Run(replace(options, use_cache=False), progress=False)
    prices = run.prices if prices is None else prices
    judges = run._build_models()
    notes: list[str] = []
    examples, personas, skipped, known = _personas(run, notes)
    specs = {"test": run.model, "baseline": run.baseline}
    requests = {role: run.requests(role, examples, personas) for role in ROLES}
    for role in ROLES:
        check_context_lengths(build_generator(specs[role], option=ROLE_OPTIONS[role]), requests[role], role)
    run.check_run_dir()
    cache, cache_info = open_cache(options.use_cache, options.cache_path)
    try:
        lookups = Lookups(cache, options.use_cache)
        rows, responses, bounds = _plan_generation(run, examples, personas, requests, lookups, known)
        items = [JudgeItem(id=e.id, prompt=e.prompt, persona=p.text) for e, p in zip(examples, personas)]
        rows += _plan_judging(run.task, run.judge_choices, judges, items, responses, bounds, run.run_dir, lookups)
    finally:
        cache.close()
    if any(str(text).startswith(PLACEHOLDER) for text in responses.values()):
        notes.append("judge inputs of items not generated yet count each missing response at its most tokens "
                     "(max_new_tokens); their judgments are new")
    plan = {
        "dry_run": True,
        "kind": "run",
        "task": run.task.name,
        "split": run.split,
        "persona_source": run.persona_source_name,
        "items": len(examples),
        "skipped_items": skipped,
        "run_dir": str(run.run_dir),
        "run_dir_exists": run.run_dir.exists(),
        "run_key": run.run_key,
        "cache": cache_info,
        "rows": rows,
        **_price_rows(rows, prices or {}),
        "notes": notes + _judge_notes(rows, run.task) + preparation_notes(),
    }
    return plan


def plan_rejudge(run_dir, *, judges: Sequence[str] = (), judge_model: str | None = None,
                 judge_options: Mapping[str, Any] | None = None, output_dir=None, use_cache: bool = True,
                 cache_path: str | None = None, resamples: int = 1000, prices: Sequence[str] = ()) -> dict[str, Any]:
    """The plan of `persona-eval judge RUN_DIR`; writes nothing (not even the judge-* folder)."""
    from persona_eval.pipeline.run import prepare_rejudge

    with memo_read_only():
        setup = prepare_rejudge(Path(run_dir), judges=judges, judge_model=judge_model, judge_options=judge_options,
                                output_dir=output_dir, resamples=resamples, prices=prices)
        cache, cache_info = open_cache(use_cache, cache_path)
        rows = _judge_rows(setup, cache, use_cache)
    return {
        "dry_run": True,
        "kind": "judge",
        "task": setup.task.name,
        "split": setup.config.get("split"),
        "items": len(setup.items),
        "rejudge_of": str(run_dir),
        "run_dir": str(setup.out_dir),
        "run_dir_exists": setup.out_dir.exists(),
        "cache": cache_info,
        "rows": rows,
        **_price_rows(rows, setup.prices),
        "notes": _judge_notes(rows, setup.task) + preparation_notes(),
    }


def _judge_rows(setup, cache, use_cache: bool) -> list[dict[str, Any]]:
    try:
        return _plan_judging(setup.task, setup.choices, setup.judges, setup.items, setup.responses, {}, setup.out_dir,
                             Lookups(cache, use_cache))
    finally:
        cache.close()


def _judge_notes(rows, task) -> list[str]:
    judged = [row for row in rows if row["stage"] == "judge"]
    if not judged:
        return []
    criteria = len(task.spec.judge.criteria)
    most = max(row.get("max_attempts", 1) for row in judged)
    text = f"judge calls: {criteria} criteria x 2 orders = {2 * criteria} per item and judge"
    if any(row.get("requests_per_call", 1) > 1 for row in judged):
        text += "; a written verdict is followed by a P(A) probe (2 requests a verdict)"
    if most > 1:
        text += f"; re-asks of replies without a verdict may add more (up to {most} asks a verdict)"
    return [text]


def preparation_notes() -> list[str]:
    """What the run prepares first and the plan did not (the embedded model's copy on a fresh machine)."""
    notes = []
    for what in unprepared_folders().values():
        # (The run key and run directory do not depend on it: they name models, not their hashes.)
        text = (f"{what}: the run prepares it first (once per machine; `persona-eval download-default-model` does "
                "it now). Its content hash, part of its identity and cache keys, is unknown until then, so none of "
                "its calls is looked up in the cache and its input tokens are estimated")
        notes.append(text)
    return notes


def finish_plan(rows: list[dict[str, Any]], prices: Mapping[str, Any] | None) -> dict[str, Any]:
    """The total (and costs) of rows built elsewhere (the persona-inference plan)."""
    return _price_rows(rows, prices or {})


# ---- printing ---------------------------------------------------------------------------------


def _counts(row: Mapping[str, Any]) -> str:
    return (f"{row['calls']} calls: {row['new']} new, {row['cached']} cached, {row['resumed']} in the "
            f"{'output' if row.get('stage') == 'persona_inference' else 'run directory'}")


def render_plan(plan: Mapping[str, Any], console=None) -> None:
    """The plan on stdout, one line per stage and model, then where the counts and tokens come from."""
    from rich.console import Console
    from rich.text import Text

    from persona_eval.display.report import format_cost, format_tokens

    console = console or Console()
    head = f"dry run: {plan.get('kind')} · " + (f"task {plan['task']}" if plan.get("task") else f"source {plan.get('source')}")
    if plan.get("split"):
        head += f" · {plan['split']} personas" + (f" ({plan['persona_source']})" if plan.get("persona_source") else "")
    head += f" · {plan.get('items')} items"
    lines = [Text(head, style="bold")]
    for row in plan["rows"]:
        bounded = "≤ " if "upper" in str(row.get("output_source", "")) else ""
        text = f"{row['stage']} {row['label']} on {row['model']}: {_counts(row)}"
        if row.get("criteria"):
            text += " (" + ", ".join(f"{name} {c['calls']}" for name, c in row["criteria"].items()) + ")"
        text += f"; tokens {format_tokens(row['input_tokens'])} in / {bounded}{format_tokens(row['output_tokens'])} out"
        if "cost" in row:
            text += f" · {format_cost(row['cost'])}"
        lines.append(Text(text))
    total = plan["total"]
    text = (f"total: {total['calls']} calls, {total['new']} new, {total['cached']} cached, {total['resumed']} done; "
            f"tokens {format_tokens(total['input_tokens'])} in / {format_tokens(total['output_tokens'])} out")
    if "cost" in total:
        text += f" · cost {format_cost(total['cost'])}" + (f" (no price for {', '.join(total['unpriced'])})"
                                                          if total.get("unpriced") else "")
    lines.append(Text(text, style="bold"))
    sources = sorted({f"{row['model']}: {row.get('input_source')}" for row in plan["rows"] if row["new"]})
    if sources:
        estimated = any(row.get("input_source") == "estimated" for row in plan["rows"] if row["new"])
        lines.append(Text("input tokens: " + "; ".join(sources)
                          + (f" (estimated = {CHARS_PER_TOKEN} characters a token)" if estimated else "")))
        lines.append(Text("output tokens: an upper bound (max_new_tokens a call; a verdict read from P(A) reads one token), "
                          "unless a file gives the responses"))
    lines += [Text(note) for note in plan.get("notes") or []]
    cache = plan.get("cache") or {}
    if not cache.get("used", True):
        lines.append(Text("cache: not used (--no-cache)"))
    elif cache.get("path"):
        lines.append(Text(f"cache: {cache['path']}" + ("" if cache.get("exists") else " (does not exist yet)")))
    where = plan.get("run_dir") or plan.get("output")
    if where:
        kind = "output" if plan.get("kind") == "infer" else "run directory"
        lines.append(Text(f"{kind}: {where}" + (" (exists: the run resumes it)" if plan.get("run_dir_exists") else " (not created)")))
    if "cost" not in total:
        lines.append(Text("cost: no price given (--price MODEL=IN_PER_1M:OUT_PER_1M, or a prices: file in $PERSONA_EVAL_PRICES)"))
    lines.append(Text("nothing was generated, judged or written"))
    for line in lines:
        console.print(line)


def emit_plan(plan: Mapping[str, Any], as_json: bool = False) -> None:
    if as_json:
        import json

        import click

        click.echo(json.dumps(plan, indent=2, default=str))
    else:
        render_plan(plan)
