"""Stage 3, judge: both orders of every item and criterion, through every judge of the run.

Each verdict is cached by judge identity + exact input + order (a resumed or repeated
run does no repeated work) and appended as one record to ``judgments.jsonl``. Each record
carries the judge's label and a hash of its identity (``judge_key``): a record is reused
only by the very same judge, so changing the judge model, prompt template, rubric or
parameters never reuses another judge's verdicts. The same stage serves `persona-eval run`
and `persona-eval judge RUN_DIR`.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from persona_eval.contracts.factories import build_generator, build_judge, judge_origin
from persona_eval.contracts.records import PairRequest, Verdict
from persona_eval.errors import UsageError, plugin_call
from persona_eval.executors.work import judge_work
from persona_eval.hashing import stable_hash
from persona_eval.pipeline.cached_map import cached_map
from persona_eval.pipeline.context import RunContext
from persona_eval.pipeline.items import JudgeItem
from persona_eval.pipeline.judges import JudgeChoice
from persona_eval.rendering.prompts import render_template
from persona_eval.scoring.metrics import ORDERS
from persona_eval.scoring.usage import estimate_tokens
from persona_eval.storage.jsonl import JUDGMENT_KEY, JsonlWriter, read_keyed

# Items judged per `cached_map` call: big enough that the overlapping batches stay busy,
# small enough that a chunk's pair requests are a few MB however long the run.
JUDGE_CHUNK_ITEMS = 1024


def criteria_hash(task) -> str:
    """Hash of the task's judge criteria (instruction templates and rubrics)."""
    criteria = {name: c.model_dump(mode="json") for name, c in task.spec.judge.criteria.items()}
    return stable_hash(criteria, 16)


def judge_identity(judge, task) -> dict[str, Any]:
    """The judge's own identity plus the rubric hash of the task it judges for."""
    return {**judge.identity(), "rubric": criteria_hash(task)}


def pair_requests(task, items: Sequence[JudgeItem], responses: Mapping[tuple[str, str], str]) -> list[tuple[dict[str, str], PairRequest]]:
    """Both orders of every item and criterion, with their judgment-record keys."""
    criteria = task.spec.judge.criteria
    out = []
    for item in items:
        test, base = responses[(item.id, "test")], responses[(item.id, "baseline")]
        for name, criterion in criteria.items():
            try:
                instruction = render_template(criterion.instruction, prompt=item.prompt, persona=item.persona)
            except UsageError as exc:  # undefined variables and sandbox violations show only when rendered
                raise UsageError(f"judge.criteria.{name}.instruction (item {item.id!r}): {exc}", where=str(task.path)) from exc
            for order in ORDERS:
                a, b = (base, test) if order == "baseline_first" else (test, base)
                key = {"item_id": item.id, "criterion": name, "order": order}
                out.append((key, PairRequest(
                    id=item.id, criterion=name, instruction=instruction, rubric=criterion.rubric,
                    response_a=a, response_b=b, prompt=item.prompt, persona=item.persona,
                )))
    return out


def pair_payload(entry: tuple[dict[str, str], PairRequest]) -> dict[str, Any]:
    """The cache input of one judgment: `PairRequest.cache_input()` plus the order.

    The order is part of the input: with identical responses the two orders would
    otherwise share one verdict. Built from ``vars`` rather than ``asdict`` (same dict, no
    deep copy: ~0.2 ms less per judgment, which matters at hundreds of judgments per second).
    """
    key, pair = entry
    return {**vars(pair), "id": None, "order": key["order"]}


def record_key(record: Mapping[str, Any]) -> tuple[str, str, str]:
    return (record["item_id"], record["criterion"], record["order"])


def slim_judgment(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a judgment record that resuming and scoring read (not the raw output)."""
    return {k: record.get(k) for k in ("item_id", "criterion", "order", "judge", "judge_key", "winner",
                                        "unscored_reason", "prob_a", "attempts")}


def _verdict_dict(verdict: Verdict) -> dict[str, Any]:
    """`Verdict.to_dict()` without the deep copy."""
    return {k: v for k, v in vars(verdict).items() if k != "cached"}


def estimated_usage(pair: PairRequest, verdict: Verdict) -> dict[str, Any]:
    """One call's usage guessed from the text (a judge whose `Verdict.usage` is None): its inputs and raw output."""
    asks = max(1, int(verdict.attempts or 1))
    text = "".join((pair.instruction, pair.rubric, pair.response_a, pair.response_b))
    return {"requests": asks, "input_tokens": asks * estimate_tokens(text), "output_tokens": estimate_tokens(verdict.raw),
            "source": "estimated"}


def build_judges(choices: Sequence[JudgeChoice], options: Mapping[str, Mapping[str, Any]], task, seed: int) -> dict[str, Any]:
    """Each judge of the run by label, built once (so its options fail before any folder is made).

    `options` are each judge's validated ``--judge-option`` values (`judges.options_by_judge`),
    applied over the task's ``judge.options``.
    """
    return {c.label: build_judge(c.name, c.model, task, seed, **options.get(c.label, {})) for c in choices}


def judge_stage(ctx: RunContext, choices: Sequence[JudgeChoice], judges: Mapping[str, Any],
                items: Sequence[JudgeItem], responses: Mapping[tuple[str, str], str]) -> dict[str, list[dict[str, Any]]]:
    """Judge every pair with every judge (`build_judges`); returns the slim records by judge label.

    Sets ``identities["judges"]``.
    """
    path = ctx.out_dir / "judgments.jsonl"
    task = ctx.task
    # In memory, a judgment keeps only what scoring reads; the whole record, raw judge
    # output included, is on disk. Pair requests (rendered instruction and both responses)
    # exist for one chunk of items at a time. Memory stays flat in the items.
    # Two different records for one (item, criterion, order, judge, judge_key) are an error; identical ones count once.
    existing = list(read_keyed(path, JUDGMENT_KEY, required=("item_id", "criterion", "order"), transform=slim_judgment,
                               what="judgment", repair_tail=True).values())
    wanted = {(item.id, name, order) for item in items for name in task.spec.judge.criteria for order in ORDERS}
    by_label: dict[str, list[dict[str, Any]]] = {}
    identities: dict[str, dict[str, Any]] = {}
    ctx.identities["judges"] = identities
    # Each record is flushed as it is written (a killed process loses none); the fsync for
    # power loss is paid once per batch, not per record (~7 ms each on a slow disk).
    with JsonlWriter(path, fsync=False) as writer:
        for choice in choices:
            # Generators are pooled by spec: this is the very generator the judge runs on.
            judge_generator = build_generator(choice.model, option="--judge-model")
            ctx.generators[choice.model] = judge_generator
            if callable(getattr(judge_generator, "bind_run_dir", None)):  # optional: plugins need not subclass
                judge_generator.bind_run_dir(ctx.out_dir)
            judge = judges[choice.label]
            identity = judge_identity(judge, task)
            identities[choice.label] = identity
            judge_key = stable_hash(identity, 16)
            done = {record_key(r): r for r in existing if r.get("judge") == choice.label and r.get("judge_key") == judge_key}
            resumed = sum(1 for key in done if key in wanted)
            bar = ctx.progress.add(f"judge {choice.label}", len(wanted), resumed)
            ctx.usage.add_resumed("judge", choice.model, resumed)
            started = time.perf_counter()
            batch_size = max(1, judge.preferred_batch_size)
            written = [0]
            for start in range(0, len(items), JUDGE_CHUNK_ITEMS):
                pairs = pair_requests(task, items[start : start + JUDGE_CHUNK_ITEMS], responses)
                todo = [(k, p) for k, p in pairs if record_key(k) not in done]
                if todo:
                    _judge_chunk(ctx, todo, done, judge, choice, identity, judge_key, writer, bar, batch_size, written)
            writer.sync()
            ctx.usage.add_seconds("judge", choice.model, time.perf_counter() - started)
            by_label[choice.label] = [r for key, r in done.items() if key in wanted]
    return by_label


def _judge_chunk(ctx, todo, done, judge, choice, identity, judge_key, writer, bar, batch_size, written) -> None:
    """Judge one chunk's pairs (cached, batched); write each record and keep its slim form in `done`."""
    what = judge_origin(choice.label, choice.name)

    def on_result(j: int, verdict: Verdict, cached: bool):
        key, pair = todo[j]
        record = {**key, "judge": choice.label, "judge_key": judge_key, **_verdict_dict(verdict), "cached": cached}
        if record.get("usage") is None:  # a judge that does not say what it spent: estimated
            record["usage"] = estimated_usage(pair, verdict)
        ctx.usage.add("judge", choice.model, cached=cached, usage=record["usage"])
        writer.write(record)
        # Cached records can be rebuilt from the cache: only new work pays for fsync.
        written[0] += not cached
        if not cached and written[0] % batch_size == 0:
            writer.sync()
        done[record_key(key)] = slim_judgment(record)
        ctx.progress.advance(bar)
        ctx.record_written(record)

    cached_map(
        stage="judge",
        identity=identity,
        inputs=todo,
        payload=pair_payload,
        compute=lambda batch: plugin_call(what, judge.compare, [p for _, p in batch]),
        encode=_verdict_dict,
        decode=Verdict.from_dict,
        cache=ctx.cache,
        batch_size=batch_size,
        on_result=on_result,
        # The next batch is judged while this one is stored: network judges stay busy.
        overlap=True,
        concurrent=max(1, int(getattr(judge, "max_concurrent_calls", 1) or 1)),
        # --executor ray: workers rebuild this judge from its name, model, task and options.
        executor=ctx.executor,
        work=None if ctx.executor is None else judge_work(choice.name, choice.model, ctx.task, ctx.seed,
                                                          ctx.judge_options.get(choice.label)),
    )
