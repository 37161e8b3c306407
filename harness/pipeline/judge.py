"""The judging and scoring stages, shared by `persona-eval run` and `persona-eval judge RUN_DIR`.

Judging builds both orders of every item and criterion, sends them through each judge
(cached by judge identity + exact input + order, so a resumed or repeated run does no
repeated work) and appends one record per verdict to ``judgments.jsonl``. Each record
carries the judge's label and a hash of its identity (``judge_key``): a record is
reused only by the very same judge, so changing the judge model, prompt template,
rubric or parameters never reuses another judge's verdicts.

Scoring turns the records into the metric (`metrics.summarize`) per judge and, with
several judges, into a majority vote (`voting`), which becomes the headline.

A judge is named on the command line as ``NAME`` (it runs on ``--judge-model``) or
``NAME@MODEL_SPEC`` (its own model), e.g. ``--judge prometheus --judge
gpt-4o@openai:gpt-4o``.

`rejudge` re-judges a finished run directory from its ``config.json`` and
``generations.jsonl`` alone, without regenerating. Its output goes to
``RUN_DIR/judge-<judges>-<model>-<hash>/`` (``config.json``, ``judgments.jsonl``,
``results.json``): the run's own ``results.json`` is never overwritten, and every
judge set gets its own folder, so several re-judgings sit side by side.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from persona_eval.contracts.records import PairRequest, Verdict
from persona_eval.errors import UsageError
from persona_eval.hashing import stable_hash
from persona_eval.pipeline.cached_map import cached_map
from persona_eval.scoring.metrics import ORDERS, item_outcomes, summarize, summarize_outcomes
from persona_eval.storage.files import atomic_write_json, safe_slug
from persona_eval.storage.jsonl import JsonlWriter, iter_jsonl, read_jsonl

logger = logging.getLogger("persona_eval.pipeline.judge")

ROLES = ("test", "baseline")


@dataclass(frozen=True)
class JudgeChoice:
    """One judge of a run: its label in records and results, plugin name and model spec."""

    label: str
    name: str
    model: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class JudgeItem:
    """What the judge needs of one item besides the two responses."""

    id: str
    prompt: str
    persona: str


def parse_judge_choices(values: Sequence[str], default_model: str) -> list[JudgeChoice]:
    """``NAME`` or ``NAME@MODEL_SPEC`` per --judge, checked against the registries."""
    from persona_eval.contracts import registry
    from persona_eval.contracts.model_spec import parse_model_spec

    choices: list[JudgeChoice] = []
    for value in values:
        text = (value or "").strip()
        name, at, model = text.partition("@")
        name, model = name.strip(), (model.strip() if at else default_model)
        if not name or (at and not model):
            raise UsageError(f"--judge {value!r}: expected NAME or NAME@BACKEND:MODEL, e.g. gpt-4o@openai:gpt-4o")
        registry.judges.entry(name)
        spec = parse_model_spec(model, option=f"--judge {name}@" if at else "--judge-model")
        registry.generators.entry(spec.backend)
        choices.append(JudgeChoice(label=text, name=name, model=model))
    labels = [c.label for c in choices]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UsageError(f"--judge {duplicates[0]!r} is given twice; give each judge once (NAME@MODEL to vary the model)")
    return choices


def options_by_judge(choices: Sequence[JudgeChoice], options: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``--judge-option`` values per judge label: each judge gets the options it takes.

    One flag can then serve a mixed panel (``feedback=true`` reaches Prometheus, not GPT-4o);
    an option no judge of the run takes is a usage error, so typos still fail.
    """
    from persona_eval.contracts import registry
    from persona_eval.contracts.factories import reject_harness_arguments

    options = dict(options or {})
    reject_harness_arguments(options, what="--judge-option")
    per_judge = {c.label: registry.judges.accepted_options(c.name, options) for c in choices}
    taken = {key for accepted in per_judge.values() for key in accepted}
    unknown = sorted(set(options) - taken)
    if unknown:
        names = ", ".join(sorted({c.name for c in choices}))
        raise UsageError(f"--judge-option {unknown[0]!r}: no judge of this run ({names}) has that option")
    return per_judge


def criteria_hash(task) -> str:
    """Hash of the task's judge criteria (instruction templates and rubrics)."""
    criteria = {name: c.model_dump(mode="json") for name, c in task.spec.judge.criteria.items()}
    return stable_hash(criteria, 16)


def judge_identity(judge, task) -> dict[str, Any]:
    """The judge's own identity plus the rubric hash of the task it judges for."""
    return {**judge.identity(), "rubric": criteria_hash(task)}


def pair_requests(task, items: Sequence[JudgeItem], responses: Mapping[tuple[str, str], str]) -> list[tuple[dict[str, str], PairRequest]]:
    """Both orders of every item and criterion, with their judgment-record keys."""
    from persona_eval.rendering.prompts import render_template

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


def _record_key(record: Mapping[str, Any]) -> tuple[str, str, str]:
    return (record["item_id"], record["criterion"], record["order"])


class _NoProgress:
    def add(self, description: str, total: int, completed: int = 0):
        return None

    def advance(self, task_id, amount: int = 1) -> None:
        return None


def run_judges(
    *,
    task,
    choices: Sequence[JudgeChoice],
    items: Sequence[JudgeItem],
    responses: Mapping[tuple[str, str], str],
    path: Path,
    cache,
    seed: int,
    progress=None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    judge_options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Judge every pair with every judge; returns records (the fields scoring reads) by judge label, and identities.

    `judge_options` (``--judge-option``) go over the task's ``judge.options``, to each judge that takes them.
    """
    from persona_eval.contracts.factories import build_judge

    progress = progress or _NoProgress()
    # In memory, a judgment keeps only what scoring reads (`_slim`); the whole record, raw
    # judge output included, is on disk. Pair requests (rendered instruction and both
    # responses) exist for one chunk of items at a time. Memory stays flat in the items.
    existing = [_slim(r) for r in iter_jsonl(path, repair_tail=True)]
    wanted = {(item.id, name, order) for item in items for name in task.spec.judge.criteria for order in ORDERS}
    by_label: dict[str, list[dict[str, Any]]] = {}
    identities: dict[str, dict[str, Any]] = {}
    per_judge_options = options_by_judge(choices, judge_options)
    # Each record is flushed as it is written (a killed process loses none); the fsync for
    # power loss is paid once per batch, not per record (~7 ms each on a slow disk).
    with JsonlWriter(path, fsync=False) as writer:
        for choice in choices:
            judge = build_judge(choice.name, choice.model, task, seed, **per_judge_options[choice.label])
            identity = judge_identity(judge, task)
            identities[choice.label] = identity
            judge_key = stable_hash(identity, 16)
            done = {
                _record_key(r): r for r in existing
                if r.get("judge") == choice.label and r.get("judge_key") == judge_key
            }
            bar = progress.add(f"judge {choice.label}", len(wanted), sum(1 for key in done if key in wanted))

            batch_size = max(1, judge.preferred_batch_size)
            written = [0]
            for start in range(0, len(items), JUDGE_CHUNK_ITEMS):
                pairs = pair_requests(task, items[start : start + JUDGE_CHUNK_ITEMS], responses)
                todo = [(k, p) for k, p in pairs if _record_key(k) not in done]
                if todo:
                    _judge_chunk(todo, done, judge, choice, identity, judge_key, cache, writer, progress, bar,
                                 batch_size, written, on_record)
            writer.sync()
            by_label[choice.label] = [r for key, r in done.items() if key in wanted]
    return by_label, identities


# Items judged per `cached_map` call: big enough that the overlapping batches stay busy,
# small enough that a chunk's pair requests are a few MB however long the run.
JUDGE_CHUNK_ITEMS = 1024


def _slim(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a judgment record that resuming and scoring read (not the raw output)."""
    return {k: record.get(k) for k in ("item_id", "criterion", "order", "judge", "judge_key", "winner",
                                        "unscored_reason", "prob_a", "attempts")}


def _judge_chunk(todo, done, judge, choice, identity, judge_key, cache, writer, progress, bar, batch_size, written,
                 on_record) -> None:
    """Judge one chunk's pairs (cached, batched); write each record and keep its slim form in `done`."""
    from persona_eval.contracts.factories import judge_origin
    from persona_eval.errors import plugin_call

    def on_result(j: int, verdict: Verdict, cached: bool, todo=todo, done=done, bar=bar, label=choice.label,
                  judge_key=judge_key, batch_size=batch_size, written=written):
        key, _ = todo[j]
        record = {**key, "judge": label, "judge_key": judge_key, **_verdict_dict(verdict), "cached": cached}
        writer.write(record)
        # Cached records can be rebuilt from the cache: only new work pays for fsync.
        written[0] += not cached
        if not cached and written[0] % batch_size == 0:
            writer.sync()
        done[_record_key(key)] = _slim(record)
        progress.advance(bar)
        if on_record is not None:
            on_record(record)

    cached_map(
        stage="judge",
        identity=identity,
        inputs=todo,
        # The order is part of the input: with identical responses the two orders
        # would otherwise share one verdict.
        payload=_pair_payload,
        compute=lambda batch, judge=judge, what=judge_origin(choice.label, choice.name): plugin_call(
            what, judge.compare, [p for _, p in batch]),
        encode=_verdict_dict,
        decode=Verdict.from_dict,
        cache=cache,
        batch_size=batch_size,
        on_result=on_result,
        # The next batch is judged while this one is stored: network judges stay busy.
        overlap=True,
        concurrent=max(1, int(getattr(judge, "max_concurrent_calls", 1) or 1)),
    )


def _pair_payload(entry: tuple[dict[str, str], PairRequest]) -> dict[str, Any]:
    """The cache input of one judgment: `PairRequest.cache_input()` plus the order.

    Built from ``vars`` rather than ``asdict`` (same dict, no deep copy: ~0.2 ms less per
    judgment, which matters at hundreds of judgments per second).
    """
    key, pair = entry
    return {**vars(pair), "id": None, "order": key["order"]}


def _verdict_dict(verdict: Verdict) -> dict[str, Any]:
    """`Verdict.to_dict()` without the deep copy."""
    return {k: v for k, v in vars(verdict).items() if k != "cached"}


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
    from persona_eval.scoring.voting import RULE, agreement, majority_outcomes

    lengths = response_lengths(items, responses)
    criteria = tuple(task.spec.judge.criteria)
    per_judge = {
        label: summarize(judgments.get(label, []), lengths=lengths, criteria=criteria, resamples=resamples, seed=seed)
        for label in labels
    }
    if len(labels) == 1:
        return {"metrics": per_judge[labels[0]], "per_judge": per_judge}
    outcomes = {label: item_outcomes(judgments.get(label, [])) for label in labels}
    pooled = [r for label in labels for r in judgments.get(label, [])]
    headline = summarize_outcomes(
        majority_outcomes(outcomes), verdicts=pooled, lengths=lengths, criteria=criteria, resamples=resamples, seed=seed
    )
    headline["voting"] = {"judges": list(labels), "rule": RULE, **agreement(outcomes)}
    return {"metrics": headline, "per_judge": per_judge}


def generator_stats(generators: Mapping[str, Any]) -> dict[str, Any]:
    """``stats()`` of every generator that has it (API backends: requests, retries, errors)."""
    out: dict[str, Any] = {}
    for spec, generator in generators.items():
        stats = getattr(generator, "stats", None)
        if not callable(stats):
            continue
        try:
            value = stats()
        except Exception as exc:  # noqa: BLE001 - statistics must never break a run
            logger.warning("stats() of %s raised %s: %s", spec, type(exc).__name__, exc)
            continue
        if value:
            out[spec] = value
    return out


# ---- re-judging a finished run directory ----------------------------------------------


def _load_run_dir(run_dir: Path) -> tuple[dict[str, Any], Any, list[JudgeItem], dict[tuple[str, str], str]]:
    from pydantic import ValidationError

    from persona_eval.taskfile.loading import Task
    from persona_eval.taskfile.schema import TaskSpec

    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise UsageError("not a run directory (no config.json); run `persona-eval run` first", where=str(run_dir))
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        resolved = config["task"]["resolved"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"unreadable run config ({type(exc).__name__}: {exc})", where=str(config_path)) from exc
    try:
        spec = TaskSpec.model_validate(resolved)
    except ValidationError as exc:
        raise UsageError(f"the task recorded in the run no longer validates: {exc.errors()[0]['msg']}", where=str(config_path)) from exc
    # The task as it was resolved for the run: later edits of the YAML do not change what is re-judged.
    task = Task(spec=spec, path=Path(config["task"].get("path") or run_dir / "task.yaml"), raw=resolved)

    generations_path = run_dir / "generations.jsonl"
    records = read_jsonl(generations_path)
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    order: list[str] = []
    for record in records:
        try:
            item_id, role = str(record["item_id"]), record["role"]
            record["response"]
        except KeyError as exc:
            raise UsageError(f"generation record lacks {exc}", where=str(generations_path)) from exc
        if role not in ROLES:
            continue
        if item_id not in order:
            order.append(item_id)
        by_key[(item_id, role)] = record
    if not order:
        raise UsageError("no generations to judge", where=str(generations_path))
    missing = [f"{i} ({role})" for i in order for role in ROLES if (i, role) not in by_key]
    if missing:
        raise UsageError(
            f"generation incomplete: no response for item {missing[0]}"
            f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; rerun `persona-eval run` to finish it",
            where=str(generations_path),
        )
    expected = config.get("items")
    if isinstance(expected, int) and expected != len(order):
        raise UsageError(
            f"generation incomplete: {len(order)} of {expected} items; rerun `persona-eval run` to finish it",
            where=str(generations_path),
        )
    prompts: dict[str, str] = {}
    if any("prompt" not in by_key[(i, "test")] for i in order):
        recorded = config["task"].get("data_hash")
        if recorded and task.data_hash != recorded:
            raise UsageError(
                "the task's test data changed since this run (data hash differs) and the run's records "
                "do not carry the prompts; rerun `persona-eval run`", where=str(task.path),
            )
        prompts = {e.id: e.prompt for e in task.load("test")}
    items = []
    for item_id in order:
        test = by_key[(item_id, "test")]
        prompt = test.get("prompt", prompts.get(item_id))
        if prompt is None:
            raise UsageError(f"item {item_id!r} is not in the task's test data", where=str(generations_path))
        items.append(JudgeItem(id=item_id, prompt=prompt, persona=test.get("persona", "")))
    responses = {key: record["response"] for key, record in by_key.items()}
    return config, task, items, responses


def rejudge_dir(run_dir: Path, choices: Sequence[JudgeChoice], judge_model: str,
                judge_options: Mapping[str, Any] | None = None) -> Path:
    labels = "+".join(safe_slug(c.name, 16) for c in choices)
    model = safe_slug(judge_model.split(":", 1)[-1].split(",", 1)[0], 24)
    keyed: Any = [c.to_dict() for c in choices]
    if judge_options:  # without options the folder keeps the name it always had
        keyed = {"judges": keyed, "judge_options": dict(judge_options)}
    return run_dir / f"judge-{labels}-{model}-{stable_hash(keyed, 8)}"


def rejudge(
    run_dir: str | Path,
    *,
    judges: Sequence[str] = (),
    judge_model: str | None = None,
    judge_options: Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
    use_cache: bool = True,
    cache_path: str | None = None,
    resamples: int = 1000,
    progress: bool = False,
) -> dict[str, Any]:
    """Judge a finished run's generations again (other judges or judge model) and score them."""
    from persona_eval import __version__
    from persona_eval.contracts.factories import build_generator
    from persona_eval.storage.cache import NullCache, ResultCache

    started = time.time()
    run_dir = Path(run_dir)
    config, task, items, responses = _load_run_dir(run_dir)
    judge_model = judge_model or config.get("judge_model") or task.spec.defaults.judge_model
    labels = tuple(judges) or tuple(config.get("judges") or (task.spec.judge.name,))
    choices = parse_judge_choices(labels, judge_model)
    # The run's --judge-option values carry over unless the re-judge gives its own.
    judge_options = dict(config.get("judge_options") or {}) if judge_options is None else dict(judge_options)
    options_by_judge(choices, judge_options)  # an unknown option fails before any work
    out_dir = Path(output_dir) if output_dir else rejudge_dir(run_dir, choices, judge_model, judge_options)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder: {exc.strerror}", where=str(out_dir)) from exc
    seed = int(config.get("seed", 0))
    cache = NullCache() if not use_cache else ResultCache(cache_path)
    from persona_eval.display.progress import Progress
    from persona_eval.pipeline.run import RESULTS_SCHEMA  # the same display and schema as `run`

    try:
        with Progress(progress) as bar:
            judgments, identities = run_judges(
                task=task, choices=choices, items=items, responses=responses,
                path=out_dir / "judgments.jsonl", cache=cache, seed=seed, progress=bar, judge_options=judge_options,
            )
    finally:
        cache.close()
    scored = score(task=task, labels=[c.label for c in choices], items=items, responses=responses,
                   judgments=judgments, resamples=resamples, seed=seed)
    judge_config = {
        "rejudge_of": {"run_dir": str(run_dir), "run_key": config.get("run_key")},
        "judges": [c.to_dict() for c in choices],
        "judge_model": judge_model,
        **({"judge_options": judge_options} if judge_options else {}),
        "identities": {"judges": identities},
        "items": len(items),
        "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }
    atomic_write_json(out_dir / "config.json", judge_config)
    identities_all = {**config.get("identities", {}), "judges": identities}
    judge_generators = {c.model: build_generator(c.model, option="--judge-model") for c in choices}
    results = {
        "schema": RESULTS_SCHEMA,
        "persona_eval_version": __version__,
        "run_dir": str(out_dir),
        "run_key": config.get("run_key"),
        "rejudge_of": str(run_dir),
        "task": {k: v for k, v in config["task"].items() if k != "resolved"},
        "split": config.get("split"),
        "model": config.get("model"),
        "baseline": config.get("baseline"),
        "strategies": config.get("strategies"),
        "persona_source": config.get("persona_source"),
        "judges": [c.label for c in choices],
        "judge_model": judge_model,
        "identities": identities_all,
        "config": {**{k: v for k, v in config.items() if k != "identities"}, "identities": identities_all, "judging": judge_config},
        "versions": config.get("versions"),
        **scored,
        "api": generator_stats(judge_generators),
        "seconds": round(time.time() - started, 2),
    }
    atomic_write_json(out_dir / "results.json", results)
    return results
