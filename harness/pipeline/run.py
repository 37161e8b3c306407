"""One evaluation run: personas, generation (test and baseline), judging, results.

A run directory holds ``config.json`` (everything resolved: task and data hashes,
specs, identities, versions, seeds), ``generations.jsonl`` and ``judgments.jsonl`` (one
record per line, flushed as each finishes) and ``results.json`` (written atomically at
the end). The default directory name is derived from the resolved config, so rerunning
the same command resumes the same run: finished records are read back, a torn last
line from a crash is dropped, and only the missing work is done.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from persona_eval import __version__
from persona_eval.contracts.factories import build_generator, build_persona_source, gen_params, generator_origin
from persona_eval.contracts.plugin_manager import notify
from persona_eval.contracts.records import Example, GenRequest, GenResult, Persona
from persona_eval.display.progress import Progress
from persona_eval.errors import RunError, UsageError, plugin_call
from persona_eval.hashing import stable_hash
from persona_eval.pipeline.cached_map import cached_map
from persona_eval.pipeline.judge import JudgeItem, generator_stats, options_by_judge, parse_judge_choices, run_judges, score
from persona_eval.rendering.prompts import choose_shots, render_input, render_response_prefix
from persona_eval.storage.cache import NullCache, ResultCache
from persona_eval.storage.files import atomic_write_json, safe_slug
from persona_eval.storage.jsonl import JsonlWriter, iter_jsonl
from persona_eval.taskfile.loading import Task, resolve_task
from persona_eval.versions import package_versions

logger = logging.getLogger("persona_eval.pipeline")


ROLES = ("test", "baseline")


RESULTS_SCHEMA = "persona-eval/results@1"


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


def _slim_generation(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a generation record that resuming and judging read."""
    return {k: record.get(k) for k in ("item_id", "role", "input", "persona", "response")}


class Run:
    """Resolves options into a config, then executes generation, judging and scoring."""

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
        self._check_names()
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
        """Resolve every plugin name now, so a typo fails before any model loads or file is written."""
        from persona_eval.contracts import registry
        from persona_eval.contracts.model_spec import parse_model_spec

        for option, text in (("--model", self.model), ("--baseline", self.baseline), ("--judge-model", self.judge_model)):
            registry.generators.entry(parse_model_spec(text, option=option).backend)
        for choice in self.judge_choices:
            registry.judges.entry(choice.name)
        registry.persona_sources.entry(self.persona_source_name)
        options_by_judge(self.judge_choices, self.options.judge_options)

    def _prepare_dir(self) -> None:
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

    def _examples(self) -> list[Example]:
        examples = self.task.load("test")
        limit = self.limit
        if limit is not None:
            if limit < 0:
                raise UsageError("--limit must be zero (all items) or positive")
            if limit > 0:
                examples = examples[:limit]
        return examples

    # -- generation ----------------------------------------------------------------------

    def _requests(self, role: str, examples: Sequence[Example], personas: Sequence[Persona]) -> list[GenRequest]:
        spec = self.task.spec
        strategy = self.strategies[role]
        params = gen_params(spec.generation, self.seed)
        pool: list[Example] = []
        if strategy == "pt_fs":
            source = spec.few_shot.source if self.task.has_partition(spec.few_shot.source) else "train"
            pool = self.task.load(source)
        requests = []
        for example, persona in zip(examples, personas):
            shots = choose_shots(pool, spec.few_shot.k, self.seed, example.prompt) if pool else ()
            try:
                prompt = render_input(spec.prompts, strategy, example, persona.text, shots)
            except UsageError as exc:  # undefined variables and sandbox violations show only when rendered
                raise UsageError(f"prompts.{strategy} (item {example.id!r}): {exc}", where=str(self.task.path)) from exc
            try:
                prefix = render_response_prefix(spec.response_prefix, example, persona.text)
            except UsageError as exc:
                raise UsageError(f"response_prefix (item {example.id!r}): {exc}", where=str(self.task.path)) from exc
            requests.append(GenRequest(id=example.id, prompt=prompt, params=params, system=spec.system_prompt, response_prefix=prefix))
        return requests

    def _check_resumable(self, role, examples, personas, requests, done) -> None:
        """Records resumed from an earlier run must have seen exactly today's input and persona.

        The run key names the persona source and its options, not the content of a persona
        file or training set; if that content changed, reusing old records would mix personas.
        """
        for example, persona, request in zip(examples, personas, requests):
            record = done.get((example.id, role))
            if record is None:
                continue
            if record.get("input") != request.prompt or record.get("persona") != persona.text:
                raise UsageError(
                    f"item {example.id!r} ({role}) was generated from a different input or persona than this run "
                    "renders (did a persona file or the task data change?); use another --output-dir or remove "
                    "the old run directory",
                    where=str(self.run_dir / "generations.jsonl"),
                )

    def _generate(self, examples, personas, progress: Progress) -> dict[tuple[str, str], dict[str, Any]]:
        path = self.run_dir / "generations.jsonl"
        # In memory a generation keeps only what judging reads; the whole record is on disk.
        done = {(r["item_id"], r["role"]): _slim_generation(r) for r in iter_jsonl(path, repair_tail=True)}
        specs = {"test": self.model, "baseline": self.baseline}
        # Each record is flushed as it is written (a killed process loses none); the fsync for
        # power loss is paid once per batch, not per record (~7 ms each on a slow disk: 14 s
        # of a fully cached 1,000-item rerun).
        with JsonlWriter(path, fsync=False) as writer:
            for role in ROLES:
                generator = build_generator(specs[role], option="--model" if role == "test" else "--baseline")
                identity = generator.identity()
                self.config["identities"][role] = identity
                requests = self._requests(role, examples, personas)
                self._check_resumable(role, examples, personas, requests, done)
                todo = [i for i, ex in enumerate(examples) if (ex.id, role) not in done]
                bar = progress.add(f"generate {role} ({self.strategies[role]})", len(examples), len(examples) - len(todo))
                batch_size = max(1, generator.preferred_batch_size)
                written = [0]

                def on_result(j: int, result: GenResult, cached: bool, role=role, todo=todo, requests=requests, bar=bar,
                              batch_size=batch_size, written=written):
                    index = todo[j]
                    example, persona, request = examples[index], personas[index], requests[index]
                    record = {
                        "item_id": example.id,
                        "role": role,
                        "model": specs[role],
                        "strategy": self.strategies[role],
                        "persona": persona.text,
                        "persona_source": persona.source,
                        "persona_provenance": persona.provenance,
                        "prompt": example.prompt,
                        "input": request.prompt,
                        "response": result.text,
                        "finish_reason": result.finish_reason,
                        "output_tokens": result.output_tokens,
                        "cached": cached,
                    }
                    writer.write(record)
                    # Cached records can be rebuilt from the cache: only new work pays for fsync.
                    written[0] += not cached
                    if not cached and written[0] % batch_size == 0:
                        writer.sync()
                    done[(example.id, role)] = _slim_generation(record)
                    progress.advance(bar)
                    notify("on_sample_end", run=self, record=record)

                cached_map(
                    stage="generate",
                    identity=identity,
                    inputs=[requests[i] for i in todo],
                    payload=GenRequest.cache_input,
                    compute=lambda batch, g=generator, what=generator_origin(specs[role]): plugin_call(what, g.generate, batch),
                    encode=lambda r: {"text": r.text, "finish_reason": r.finish_reason, "output_tokens": r.output_tokens},
                    decode=lambda d: GenResult(text=d["text"], finish_reason=d.get("finish_reason"), output_tokens=d.get("output_tokens"), cached=True),
                    cache=self.cache,
                    batch_size=batch_size,
                    on_result=on_result,
                )
                writer.sync()
        return done

    # -- judging -------------------------------------------------------------------------

    @staticmethod
    def _judge_items(examples, generations) -> list[JudgeItem]:
        # The persona as the test model saw it, exactly as recorded with its generation.
        return [JudgeItem(id=e.id, prompt=e.prompt, persona=generations[(e.id, "test")]["persona"]) for e in examples]

    @staticmethod
    def _responses(generations) -> dict[tuple[str, str], str]:
        return {key: record["response"] for key, record in generations.items()}

    def _judge(self, examples, personas, generations, progress: Progress) -> dict[str, list[dict[str, Any]]]:
        judgments, identities = run_judges(
            task=self.task, choices=self.judge_choices, items=self._judge_items(examples, generations),
            responses=self._responses(generations), path=self.run_dir / "judgments.jsonl", cache=self.cache,
            seed=self.seed, progress=progress, on_record=lambda record: notify("on_sample_end", run=self, record=record),
            judge_options=self.options.judge_options,
        )
        self.config["identities"]["judges"] = identities
        return judgments

    # -- the whole run -------------------------------------------------------------------

    def _with_personas(self, source, examples: list[Example]) -> tuple[list[Example], list[Persona], list[str]]:
        """Each item with its persona; a persona whose text is None means "leave this item out"."""
        personas = plugin_call(f"persona source {self.persona_source_name!r}", source.personas, examples, self.split)
        if len(personas) != len(examples):
            raise RunError(
                f"persona source {self.persona_source_name!r} returned {len(personas)} personas for {len(examples)} items"
            )
        skipped = [ex.id for ex, persona in zip(examples, personas) if persona.text is None]
        if not skipped:
            return examples, personas, []
        if len(skipped) == len(examples):
            raise UsageError(f"persona source {self.persona_source_name!r} gave no persona for any of the {len(examples)} item(s): nothing to evaluate")
        logger.warning("leaving out %d item(s) without a persona: %s", len(skipped), ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
        kept = [(ex, persona) for ex, persona in zip(examples, personas) if persona.text is not None]
        return [ex for ex, _ in kept], [persona for _, persona in kept], skipped

    def execute(self) -> dict[str, Any]:
        started = time.time()
        examples = self._examples()
        # Personas come before the run directory: a bad persona file must leave nothing behind.
        source = build_persona_source(self.persona_source_name, self.task, **self.options.persona_source_options)
        examples, personas, skipped = self._with_personas(source, examples)
        self._prepare_dir()
        self.config = {
            "run_key": self.run_key,
            **self.key_config,
            "task": {**self.key_config["task"], "path": str(self.task.path), "resolved": self.task.resolved()},
            "persona_source": {**self.key_config["persona_source"], "identity": source.identity(), "skipped_items": skipped},
            "items": len(examples),
            "identities": {},
            "versions": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        }
        # Written before any work, so a resumed run can always check it is the same run.
        atomic_write_json(self.run_dir / "config.json", self.config)
        notify("on_run_start", run=self)
        with Progress(self.show_progress) as progress:
            generations = self._generate(examples, personas, progress)
            atomic_write_json(self.run_dir / "config.json", self.config)
            judgments = self._judge(examples, personas, generations, progress)
        atomic_write_json(self.run_dir / "config.json", self.config)
        results = self.results(examples, generations, judgments, time.time() - started)
        atomic_write_json(self.run_dir / "results.json", results)
        notify("on_run_end", run=self, results=results)
        return results

    def results(self, examples, generations, judgments, seconds: float) -> dict[str, Any]:
        scored = score(
            task=self.task, labels=[c.label for c in self.judge_choices], items=self._judge_items(examples, generations),
            responses=self._responses(generations), judgments=judgments, resamples=self.options.bootstrap, seed=self.seed,
        )
        specs = {self.model: "--model", self.baseline: "--baseline", **{c.model: "--judge-model" for c in self.judge_choices}}
        return {
            "schema": RESULTS_SCHEMA,
            "persona_eval_version": __version__,
            "run_dir": str(self.run_dir),
            "run_key": self.run_key,
            "task": {k: v for k, v in self.config["task"].items() if k != "resolved"},
            "split": self.split,
            "model": self.model,
            "baseline": self.baseline,
            "strategies": self.strategies,
            "persona_source": self.config["persona_source"],
            "judges": list(self.judge_names),
            "judge_model": self.judge_model,
            "identities": self.config["identities"],
            "config": self.config,
            "versions": self.config["versions"],
            **scored,
            "api": generator_stats({spec: build_generator(spec, option=option) for spec, option in specs.items()}),
            "seconds": round(seconds, 2),
        }
