"""One evaluation run, as a pipeline of stages around one run context.

    personas -> generate -> judge -> score -> results

`Run` resolves the options (task, split, specs, strategies, judges and their options,
persona source) once, derives the run key and directory, and executes the stages in
order; `rejudge` enters the same pipeline at the judge stage with a finished run
directory (`persona-eval judge RUN_DIR`). A run directory holds ``config.json``
(everything resolved: task and data hashes, specs, identities, versions, seeds; written
before any work and again at the end), ``generations.jsonl`` and ``judgments.jsonl`` (one
record per line, flushed as each finishes) and ``results.json`` (written atomically at
the end). The default directory name is derived from the resolved config, so rerunning
the same command resumes the same run: finished records are read back, a torn last line
from a crash is dropped, and only the missing work is done. A re-judging writes to
``RUN_DIR/judge-<judges>-<model>-<hash>/``: the run's own results are never overwritten.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from persona_eval.contracts import registry
from persona_eval.contracts.factories import build_generator
from persona_eval.contracts.model_spec import parse_model_spec
from persona_eval.contracts.plugin_manager import notify
from persona_eval.display.progress import Progress
from persona_eval.errors import UsageError
from persona_eval.executors import parse_executor
from persona_eval.hashing import stable_hash
from persona_eval.limits import check_number, check_option_values, check_text
from persona_eval.pipeline.context import RunContext
from persona_eval.pipeline.generate import ROLE_OPTIONS, check_context_lengths, generate_stage, render_requests
from persona_eval.pipeline.items import ROLES, JudgeItem
from persona_eval.pipeline.judge import build_judges, judge_stage
from persona_eval.pipeline.judges import JudgeChoice, options_by_judge, parse_judge_choices
from persona_eval.pipeline.personas import personas_stage, test_examples
from persona_eval.pipeline.results import build_results, fidelity_block, generator_stats
from persona_eval.pipeline.run_dir import read_run_dir
from persona_eval.pipeline.score import score
from persona_eval.scoring.usage import load_prices
from persona_eval.storage.cache import NullCache, ResultCache
from persona_eval.storage.files import atomic_write_json, safe_slug
from persona_eval.taskfile.loading import Task, resolve_task
from persona_eval.versions import package_versions


@dataclass
class RunOptions:
    task: str | None = None
    split: str = "rejected"
    model: str | None = None
    baseline: str | None = None
    strategy: str | None = None
    baseline_strategy: str | None = None
    judges: tuple[str, ...] = ()
    judge_model: str | None = None
    judge_options: dict[str, Any] = field(default_factory=dict)
    persona_source: str | None = None
    persona_source_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    seed: int = 0
    output_dir: str | None = None
    runs_root: str = "runs"
    include_paths: tuple[str, ...] = ()
    use_cache: bool = True
    cache_path: str | None = None
    bootstrap: int = 1000
    data_dir: str | None = None
    # ``MODEL=IN_PER_1M:OUT_PER_1M`` values (``--price``), over the ``$PERSONA_EVAL_PRICES`` file;
    # they price the usage block only, so they stay out of the run key.
    prices: tuple[str, ...] = ()
    # Where cache misses are computed: "local" or "ray[,key=value...]" (persona_eval.executors);
    # it changes where work runs, not what it gives, so it stays out of the run key too.
    executor: str = "local"


def judge_items(examples, generations) -> list[JudgeItem]:
    """What the judge needs of each item: the persona as the test model saw it, exactly as recorded."""
    return [JudgeItem(id=e.id, prompt=e.prompt, persona=generations[(e.id, "test")]["persona"]) for e in examples]


def responses_of(generations) -> dict[tuple[str, str], str]:
    return {key: record["response"] for key, record in generations.items()}


class Run:
    """Resolves options into a config, then executes the stages: personas, generate, judge, score, results."""

    def __init__(self, options: RunOptions, *, progress: bool = True):
        self.options = options
        self.task: Task = resolve_task(options.task, list(options.include_paths))
        if options.data_dir:
            self.task.use_data_dir(options.data_dir)
        spec = self.task.spec
        if options.split not in spec.splits:
            raise UsageError(f"task {self.task.name!r} has no split {options.split!r}; it has: {', '.join(spec.splits)}")
        self.split = options.split
        self.model = options.model or spec.defaults.model
        self.baseline = options.baseline or spec.defaults.baseline or self.model
        self.strategies = {
            "test": options.strategy or spec.strategies.test,
            "baseline": options.baseline_strategy or spec.strategies.baseline,
        }
        for role, strategy in self.strategies.items():
            if strategy not in spec.prompts:
                raise UsageError(
                    f"--{'strategy' if role == 'test' else 'baseline-strategy'}: unknown strategy {strategy!r}; "
                    f"task {self.task.name!r} defines: {', '.join(sorted(spec.prompts))}"
                )
        self.judge_names = tuple(options.judges) or (spec.judge.name,)
        self.judge_model = options.judge_model or spec.defaults.judge_model
        # --judge NAME runs on --judge-model; --judge NAME@SPEC on its own model.
        self.judge_choices = parse_judge_choices(self.judge_names, self.judge_model)
        self.persona_source_name = options.persona_source or spec.persona_source
        self.seed = options.seed
        self.limit = options.limit if options.limit is not None else spec.defaults.limit
        self.show_progress = progress
        self.prices = load_prices(options.prices)  # a bad --price or price file fails before any work
        # Every plugin name and judge option is resolved now, once: a typo fails before any
        # model loads or file is written.
        self._check_names()
        # Parsed now; connected in `execute`, before the run directory exists.
        self.executor = parse_executor(options.executor)
        self.key_config = {
            "task": {"name": self.task.name, "version": spec.version, "hash": self.task.task_hash, "data_hash": self.task.data_hash},
            "split": self.split,
            "model": self.model,
            "baseline": self.baseline,
            "strategies": self.strategies,
            "persona_source": {"name": self.persona_source_name, "options": options.persona_source_options},
            "judges": list(self.judge_names),
            "judge_model": self.judge_model,
            # Only when given, so runs without --judge-option keep their run keys.
            **({"judge_options": dict(options.judge_options)} if options.judge_options else {}),
            "limit": self.limit,
            "seed": self.seed,
        }
        self.run_key = stable_hash(self.key_config, 12)
        if options.output_dir:
            self.run_dir = Path(options.output_dir)
        else:
            name = f"{safe_slug(self.task.name, 24)}-{self.split}-{safe_slug(self.model.split(':', 1)[-1], 32)}-{self.run_key[:8]}"
            self.run_dir = Path(options.runs_root) / name
        self.cache = NullCache() if not options.use_cache else ResultCache(options.cache_path)
        self.config: dict[str, Any] = {}

    # -- set-up --------------------------------------------------------------------------

    def _check_names(self) -> None:
        for option, text in (("--model", self.model), ("--baseline", self.baseline), ("--judge-model", self.judge_model)):
            check_text("spec", text, what=option)
            registry.generators.entry(parse_model_spec(text, option=option).backend)
        # A persona source checks its own numbers (a retriever's k is not an exemplar count).
        check_option_values(self.options.persona_source_options, what="persona source option", numeric=False)
        registry.persona_sources.entry(self.persona_source_name)
        # Judge names and specs were checked by `parse_judge_choices`; their options are checked here, once.
        self.judge_options_by_label = options_by_judge(self.judge_choices, self.options.judge_options)

    def _build_models(self) -> dict[str, Any]:
        """Construct every generator and judge now (no weights load: backends load lazily); returns the judges.

        Constructing checks each backend's and judge's options, so a bad ``dtype=`` or
        ``--judge-option`` value fails before the run directory exists. Generators are
        pooled by spec, so the stages reuse these; the judges go to the judge stage.
        """
        for role, spec in (("test", self.model), ("baseline", self.baseline)):
            build_generator(spec, option=ROLE_OPTIONS[role])
        return build_judges(self.judge_choices, self.judge_options_by_label, self.task, self.seed)

    def check_run_dir(self) -> None:
        """An existing run directory must hold this very run (same run key); reads only."""
        config_path = self.run_dir / "config.json"
        if config_path.exists():
            try:
                previous = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UsageError(f"unreadable config.json of an earlier run: {exc}", where=str(config_path)) from exc
            if previous.get("run_key") != self.run_key:
                raise UsageError(
                    f"{self.run_dir} holds a different run (run key {previous.get('run_key')} vs {self.run_key}); "
                    "choose another --output-dir or remove it"
                )

    def _prepare_dir(self) -> None:
        self.check_run_dir()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
            # A run killed inside `atomic_write_json` leaves its temporary file behind.
            for stale in self.run_dir.glob(".*.json.*.tmp"):
                stale.unlink(missing_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot write the run directory: {exc.strerror}", where=str(self.run_dir)) from exc

    def examples(self) -> list:
        """The test items this run evaluates (before personas leave any out)."""
        return test_examples(self.task, self.limit)

    def requests(self, role: str, examples, personas) -> list:
        """The generator requests of one role for these items and personas, exactly as the run sends them."""
        return render_requests(self.task, self.strategies[role], examples, personas, self.seed)

    # -- the pipeline --------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        started = time.time()
        options = self.options
        # Models, judges and personas come before the run directory: a bad spec, option or
        # persona file must leave nothing behind.
        judges = self._build_models()
        source, examples, personas, skipped = personas_stage(
            self.task, self.split, self.persona_source_name, options.persona_source_options, self.limit)
        # Every input is rendered once, here: a template error, or an input that cannot fit a
        # model's context (where it says its length), fails before any work or folder.
        specs = {"test": self.model, "baseline": self.baseline}
        requests = {role: self.requests(role, examples, personas) for role in ROLES}
        for role in ROLES:
            check_context_lengths(build_generator(specs[role], option=ROLE_OPTIONS[role]), requests[role], role)
        # An unreachable cluster fails here, before the run directory exists.
        self.executor.prepare([build_generator(spec) for spec in (self.model, self.baseline, *(c.model for c in self.judge_choices))])
        # How each judge decides and what a backend cannot apply: named in config.json and results.json.
        fidelity = fidelity_block(judges, {role: (build_generator(specs[role], option=ROLE_OPTIONS[role]),
                                                  requests[role][0].params if requests[role] else None) for role in ROLES})
        self._prepare_dir()
        ctx = RunContext(task=self.task, split=self.split, seed=self.seed, out_dir=self.run_dir, cache=self.cache,
                         on_record=lambda record: notify("on_sample_end", run=self, record=record),
                         executor=self.executor, judge_options=self.judge_options_by_label)
        ctx.config = self.config = {
            "run_key": self.run_key,
            **self.key_config,
            "task": {**self.key_config["task"], "path": str(self.task.path), "resolved": self.task.resolved()},
            "persona_source": {**self.key_config["persona_source"], "identity": source.identity(), "skipped_items": skipped},
            "items": len(examples),
            # Only when not local, so a local run's config.json is what it always was.
            **({"executor": self.executor.describe()} if self.executor.name != "local" else {}),
            **fidelity,
            "identities": ctx.identities,
            "versions": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        }
        # Written before any work, so a resumed run can always check it is the same run...
        ctx.write_config()
        notify("on_run_start", run=self)
        try:
            with Progress(self.show_progress) as progress:
                ctx.progress = progress
                generations = generate_stage(ctx, examples, personas, specs, self.strategies, requests)
                items, responses = judge_items(examples, generations), responses_of(generations)
                judgments = judge_stage(ctx, self.judge_choices, judges, items, responses)
        finally:
            self.executor.close()
        # ... and again at the end, with the identities of every generator and judge.
        ctx.write_config()
        scored = score(task=self.task, labels=[c.label for c in self.judge_choices], items=items, responses=responses,
                       judgments=judgments, resamples=options.bootstrap, seed=self.seed)
        results = build_results(
            run_dir=str(self.run_dir), run_key=self.run_key, config=self.config, judges=list(self.judge_names),
            judge_model=self.judge_model, identities=ctx.identities, scored=scored, generators=ctx.generators,
            seconds=time.time() - started, usage=ctx.usage.block(self.prices, generator_stats(ctx.generators)),
            fidelity=fidelity,
        )
        atomic_write_json(self.run_dir / "results.json", results)
        notify("on_run_end", run=self, results=results)
        return results


# ---- the pipeline entered at the judge stage: re-judging a finished run ---------------


def rejudge_dir(run_dir: Path, choices: Sequence[JudgeChoice], judge_model: str,
                judge_options: Mapping[str, Any] | None = None) -> Path:
    labels = "+".join(safe_slug(c.name, 16) for c in choices)
    model = safe_slug(judge_model.split(":", 1)[-1].split(",", 1)[0], 24)
    keyed: Any = [c.to_dict() for c in choices]
    if judge_options:  # without options the folder keeps the name it always had
        keyed = {"judges": keyed, "judge_options": dict(judge_options)}
    return run_dir / f"judge-{labels}-{model}-{stable_hash(keyed, 8)}"


@dataclass
class Rejudging:
    """A re-judging resolved before any work: the run read back, its judges built, where it writes."""

    config: dict[str, Any]
    task: Task
    items: list
    responses: dict[tuple[str, str], str]
    judge_model: str
    choices: list[JudgeChoice]
    judge_options: dict[str, Any]
    seed: int
    judges: dict[str, Any]
    out_dir: Path
    prices: dict[str, Any]


def prepare_rejudge(run_dir: Path, *, judges: Sequence[str] = (), judge_model: str | None = None,
                    judge_options: Mapping[str, Any] | None = None, output_dir: str | Path | None = None,
                    resamples: int = 1000, prices: Sequence[str] = ()) -> Rejudging:
    """Everything `rejudge` resolves before it writes (also what ``judge RUN_DIR --dry-run`` plans from)."""
    price_table = load_prices(prices)
    config, task, items, responses = read_run_dir(run_dir)
    judge_model = judge_model or config.get("judge_model") or task.spec.defaults.judge_model
    labels = tuple(judges) or tuple(config.get("judges") or (task.spec.judge.name,))
    choices = parse_judge_choices(labels, judge_model)
    # The run's --judge-option values carry over unless the re-judge gives its own.
    judge_options = dict(config.get("judge_options") or {}) if judge_options is None else dict(judge_options)
    check_number("bootstrap", resamples, option="--bootstrap")
    per_judge = options_by_judge(choices, judge_options)  # an unknown option fails before any work
    seed = int(config.get("seed", 0))
    # Every judge is built (its options checked) before the output folder exists.
    built = build_judges(choices, per_judge, task, seed)
    out_dir = Path(output_dir) if output_dir else rejudge_dir(run_dir, choices, judge_model, judge_options)
    return Rejudging(config=config, task=task, items=items, responses=responses, judge_model=judge_model, choices=choices,
                     judge_options=judge_options, seed=seed, judges=built, out_dir=out_dir, prices=price_table)


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
    prices: Sequence[str] = (),
    executor: str = "local",
) -> dict[str, Any]:
    """Judge a finished run's generations again (other judges or judge model) and score them.

    `prices` are ``--price`` values (``MODEL=IN_PER_1M:OUT_PER_1M``) for the usage block;
    `executor` is ``local`` or ``ray[,key=value...]`` (`persona_eval.executors`).
    """
    started = time.time()
    run_dir = Path(run_dir)
    runner = parse_executor(executor)
    setup = prepare_rejudge(run_dir, judges=judges, judge_model=judge_model, judge_options=judge_options,
                            output_dir=output_dir, resamples=resamples, prices=prices)
    config, task, items, responses = setup.config, setup.task, setup.items, setup.responses
    judge_model, choices, judge_options, seed = setup.judge_model, setup.choices, setup.judge_options, setup.seed
    built, out_dir, price_table = setup.judges, setup.out_dir, setup.prices
    # API judges need no cluster: `prepare` connects only where some judge runs on a local model.
    runner.prepare([build_generator(c.model, option="--judge-model") for c in choices])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder: {exc.strerror}", where=str(out_dir)) from exc
    ctx = RunContext(task=task, split=config.get("split"), seed=seed, out_dir=out_dir,
                     cache=NullCache() if not use_cache else ResultCache(cache_path),
                     executor=runner, judge_options=options_by_judge(choices, judge_options))
    fidelity = fidelity_block(built, {}, earlier=config)
    ctx.config = {
        "rejudge_of": {"run_dir": str(run_dir), "run_key": config.get("run_key")},
        "judges": [c.to_dict() for c in choices],
        "judge_model": judge_model,
        **({"judge_options": judge_options} if judge_options else {}),
        **({"executor": runner.describe()} if runner.name != "local" else {}),
        **fidelity,
        "identities": ctx.identities,
        "items": len(items),
        "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }
    ctx.write_config()
    try:
        with Progress(progress) as bar:
            ctx.progress = bar
            judgments = judge_stage(ctx, choices, built, items, responses)
    finally:
        ctx.cache.close()
        runner.close()
    ctx.write_config()
    scored = score(task=task, labels=[c.label for c in choices], items=items, responses=responses,
                   judgments=judgments, resamples=resamples, seed=seed)
    identities_all = {**config.get("identities", {}), "judges": ctx.identities["judges"]}
    full_config = {**{k: v for k, v in config.items() if k != "identities"}, "identities": identities_all, "judging": ctx.config}
    results = build_results(
        run_dir=str(out_dir), run_key=config.get("run_key"), rejudge_of=str(run_dir), config=config,
        judges=[c.label for c in choices], judge_model=judge_model, identities=identities_all, scored=scored,
        generators=ctx.generators, seconds=time.time() - started, full_config=full_config,
        usage=ctx.usage.block(price_table, generator_stats(ctx.generators)),
        fidelity=fidelity,
    )
    atomic_write_json(out_dir / "results.json", results)
    return results
