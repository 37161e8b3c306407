"""The `persona-eval show-prompt` command: the exact input a model or the judge receives for one item.

    persona-eval show-prompt --task demo --role test                 # the test model's input, chat template applied
    persona-eval show-prompt --task demo                             # the judge's, responses as {response_A}/{response_B}
    persona-eval show-prompt --run RUN_DIR --order baseline_first    # the judge's, with the run's own responses
    persona-eval show-prompt --task demo --role baseline | diff - before.txt

Everything is resolved by the functions `persona-eval run` uses, so the text cannot drift
from a run: the task, split, specs, strategies and judge through `pipeline.run.Run` (or,
with ``--run``, from the run's config.json, its task as resolved and its generations, as
`persona-eval judge` reads them), the persona through the run's persona source, the inputs
through `generate.render_requests`, the judge's pairs through `judge.pair_requests` and
`judge.build_judges`. The judge hands over the request of its first ask
(`first_request`); the backend renders a request with `Generator.render_input` (the chat
template through the tokenizer alone, the raw string of a ``paper`` prompt, the JSON of an
OpenAI request's messages), so no weights load. A backend that does not say (``file:``
outputs) shows the request's own text. stdout holds the prompt and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import click

from persona_eval.cli_options import bounded, persona_options, persona_source_choice
from persona_eval.contracts.hookspecs import hookimpl

logger = logging.getLogger(__name__)

SHOW_ROLES = ("test", "baseline", "judge")
# What the judge sees in place of responses when no run is given.
PLACEHOLDERS = ("{response_A}", "{response_B}")


@dataclass
class Setup:
    """Everything one shown prompt depends on, resolved as a run resolves it."""

    task: Any
    split: str
    specs: dict[str, str]  # role -> model spec
    strategies: dict[str, str]
    seed: int
    judge_choice: Any  # pipeline.judges.JudgeChoice
    judge_options: dict[str, Any]  # by judge label, as `judges.options_by_judge` gives them
    example: Any  # contracts.records.Example
    persona: Any  # contracts.records.Persona
    responses: dict[tuple[str, str], str] | None  # the run's, by (item id, role); None: placeholders


def _one_of(what: str, value: str, choices, option: str) -> str:
    from persona_eval.errors import UsageError

    choices = list(choices)
    if value not in choices:
        raise UsageError(f"{option}: {what} {value!r} is not one of: {', '.join(choices)}")
    return value


def _pick_item(ids: list[str], item: str | None, where: str) -> str:
    """`item`, or the first id; an unknown id lists the valid ones (the first few of many)."""
    from persona_eval.errors import UsageError

    if not ids:
        raise UsageError("no test items", where=where)
    if item is None:
        return ids[0]
    if item not in ids:
        shown = ", ".join(ids[:8]) + (f", ... ({len(ids)} in all)" if len(ids) > 8 else "")
        raise UsageError(f"--item {item!r}: no such test item; items: {shown}", where=where)
    return item


def _judge_choice(choices, judge: str | None, judge_model: str):
    """The one judge shown: `judge` (NAME or NAME@SPEC), else the run's first."""
    from persona_eval.pipeline.judges import parse_judge_choices

    if judge is not None:
        return parse_judge_choices((judge,), judge_model)[0]
    if len(choices) > 1:
        logger.warning("several judges (%s); showing %s (choose with --judge)", ", ".join(c.label for c in choices), choices[0].label)
    return choices[0]


def fresh_setup(*, task: str | None, split: str | None, item: str | None, model: str | None, baseline: str | None,
                strategy: str | None, baseline_strategy: str | None, judge: str | None, judge_model: str | None,
                judge_options: dict[str, Any], persona_source: str | None, persona_source_options: dict[str, Any],
                seed: int, include_paths: tuple[str, ...], data_dir: str | None) -> Setup:
    """Resolve the options as `persona-eval run` does (`Run`), and the item's persona through the run's persona source."""
    from persona_eval.contracts.factories import build_persona_source
    from persona_eval.pipeline.personas import test_examples, with_personas
    from persona_eval.pipeline.run import Run, RunOptions
    from persona_eval.taskfile.loading import resolve_task

    if split is None:  # the hard benchmark where the task has it
        splits = resolve_task(task, list(include_paths)).spec.splits
        split = "rejected" if "rejected" in splits else splits[0]
    run = Run(RunOptions(
        task=task, split=split, model=model, baseline=baseline, strategy=strategy, baseline_strategy=baseline_strategy,
        judges=(judge,) if judge else (), judge_model=judge_model, judge_options=judge_options,
        persona_source=persona_source, persona_source_options=persona_source_options, limit=0, seed=seed,
        include_paths=include_paths, use_cache=False, data_dir=data_dir,
    ), progress=False)
    examples = test_examples(run.task, 0)
    chosen = _pick_item([e.id for e in examples], item, str(run.task.path))
    example = next(e for e in examples if e.id == chosen)
    source = build_persona_source(run.persona_source_name, run.task, **run.options.persona_source_options)
    # Only this item asks the source: a persona depends on its own item alone.
    _, personas, _ = with_personas(source, run.persona_source_name, [example], split)
    choice = run.judge_choices[0]
    return Setup(task=run.task, split=split, specs={"test": run.model, "baseline": run.baseline},
                 strategies=dict(run.strategies), seed=run.seed, judge_choice=choice,
                 judge_options=run.judge_options_by_label, example=example, persona=personas[0], responses=None)


def run_setup(run_dir: str, *, task: str | None, split: str | None, item: str | None, model: str | None,
              baseline: str | None, strategy: str | None, baseline_strategy: str | None, judge: str | None,
              judge_model: str | None, judge_options: dict[str, Any] | None, seed: int | None,
              data_dir: str | None) -> Setup:
    """Resolve from a finished run as `persona-eval judge` does: its task as resolved, settings, personas and responses."""
    from pathlib import Path

    from persona_eval.contracts.records import Example, Persona
    from persona_eval.errors import UsageError
    from persona_eval.pipeline.generate import ROLE_OPTIONS
    from persona_eval.pipeline.judges import options_by_judge, parse_judge_choices
    from persona_eval.pipeline.run_dir import read_run_dir

    folder = Path(run_dir)
    config, run_task, items, responses = read_run_dir(folder)
    if task is not None and task not in (run_task.name, config["task"].get("path")):
        raise UsageError(f"--task {task!r}: the run is of task {run_task.name!r} (leave --task out with --run)", where=str(folder))
    run_split = config.get("split")
    if split is not None and split != run_split:
        raise UsageError(f"--split {split!r}: the run is of split {run_split!r} (leave --split out with --run)", where=str(folder))
    if data_dir:  # pt_fs reads its exemplars from the task's data
        run_task.use_data_dir(data_dir)
    strategies = {**run_task.spec.strategies.model_dump(), **(config.get("strategies") or {})}
    strategies.update({k: v for k, v in (("test", strategy), ("baseline", baseline_strategy)) if v})
    for role, name in strategies.items():
        if role in ROLE_OPTIONS and name not in run_task.spec.prompts:
            raise UsageError(f"unknown strategy {name!r}; task {run_task.name!r} defines: {', '.join(sorted(run_task.spec.prompts))}")
    default_model = config.get("model") or run_task.spec.defaults.model
    specs = {"test": model or default_model, "baseline": baseline or config.get("baseline") or default_model}
    judge_model = judge_model or config.get("judge_model") or run_task.spec.defaults.judge_model
    labels = tuple(config.get("judges") or (run_task.spec.judge.name,))
    choice = _judge_choice(parse_judge_choices(labels, judge_model), judge, judge_model)
    # The run's --judge-option values carry over unless new ones are given, as in `persona-eval judge`.
    options = dict(config.get("judge_options") or {}) if judge_options is None else dict(judge_options)
    chosen = _pick_item([i.id for i in items], item, str(folder / "generations.jsonl"))
    judged = next(i for i in items if i.id == chosen)
    return Setup(task=run_task, split=run_split, specs=specs, strategies=strategies,
                 seed=int(config.get("seed", 0)) if seed is None else seed, judge_choice=choice,
                 judge_options=options_by_judge([choice], options), example=Example(id=judged.id, prompt=judged.prompt),
                 persona=Persona(text=judged.persona, source="run"), responses=responses)


def backend_text(spec: str, option: str, request) -> str:
    """The input the backend of `spec` sends for `request`; where it does not say, the request's own text."""
    from persona_eval.contracts.factories import build_generator

    generator = build_generator(spec, option=option)
    render = getattr(generator, "render_input", None)  # plugins need not subclass Generator
    text = render(request) if callable(render) else None
    if text is None:
        left = [name for name, value in (("system text", request.system), ("reply prefix", request.response_prefix)) if value]
        if left and not request.raw:
            logger.warning("%s does not say how it formats its input; showing the prompt without its %s",
                           spec, " and ".join(left))
        text = request.prompt
    return text


def role_request(setup: Setup, role: str):
    """The request of `role` (test or baseline) for the item, exactly as the run renders it."""
    from persona_eval.pipeline.generate import render_requests

    return render_requests(setup.task, setup.strategies[role], [setup.example], [setup.persona], setup.seed)[0]


def judge_request(setup: Setup, criterion: str, order: str):
    """The request of the judge's first ask for the item's pair in `order`, for `criterion`."""
    from persona_eval.errors import UsageError
    from persona_eval.pipeline.items import JudgeItem
    from persona_eval.pipeline.judge import build_judges, pair_requests

    item = JudgeItem(id=setup.example.id, prompt=setup.example.prompt, persona=setup.persona.text)
    responses = setup.responses
    if responses is None:
        first, second = ("baseline", "test") if order == "baseline_first" else ("test", "baseline")
        responses = {(item.id, first): PLACEHOLDERS[0], (item.id, second): PLACEHOLDERS[1]}
    pair = next(p for key, p in pair_requests(setup.task, [item], responses)
                if key["criterion"] == criterion and key["order"] == order)
    choice = setup.judge_choice
    judge = build_judges([choice], setup.judge_options, setup.task, setup.seed)[choice.label]
    first_request = getattr(judge, "first_request", None)
    if not callable(first_request):
        raise UsageError(f"judge {choice.name!r} does not say what it sends (it has no first_request method)")
    return first_request(pair)


def show_prompt(*, role: str = "judge", criterion: str | None = None, order: str = "test_first",
                run_dir: str | None = None, **options: Any) -> str:
    """The text the backend of `role` receives for one item (see the module docstring); loads no weights.

    `options` are `fresh_setup`'s keyword arguments, or with `run_dir` those of `run_setup`.
    """
    from persona_eval.pipeline.generate import ROLE_OPTIONS
    from persona_eval.scoring.metrics import ORDERS

    _one_of("role", role, SHOW_ROLES, "--role")
    _one_of("order", order, ORDERS, "--order")
    if run_dir is None:
        setup = fresh_setup(**options)
    else:
        setup = run_setup(run_dir, **options)
    if role in ROLE_OPTIONS:
        return backend_text(setup.specs[role], ROLE_OPTIONS[role], role_request(setup, role))
    criteria = list(setup.task.spec.judge.criteria)
    if criterion is None:
        criterion = "personalization" if "personalization" in criteria else criteria[0]
    _one_of("criterion", criterion, criteria, "--criterion")
    choice = setup.judge_choice
    option = "--judge" if "@" in choice.label else "--judge-model"
    return backend_text(choice.model, option, judge_request(setup, criterion, order))


@click.command(name="show-prompt")
@click.option("--task", default=None, help="Task name or YAML path (default: demo; with --run: the run's).")
@click.option("--split", default=None, help="chosen or rejected (default: rejected, else the task's first split).")
@click.option("--item", default=None, metavar="ID", help="Test item id (default: the first).")
@click.option("--role", type=click.Choice(SHOW_ROLES), default="judge", show_default=True, help="Whose input to show.")
@click.option("--criterion", default=None, help="Judge criterion (default: personalization, else the task's first).")
@click.option("--order", type=click.Choice(["test_first", "baseline_first"]), default="test_first", show_default=True,
              help="Which response the judge sees as A.")
@click.option("--model", default=None, help="Test model spec (default: the task's, or the run's).")
@click.option("--strategy", default=None, help="How the test model sees the persona (default: the task's, or the run's).")
@click.option("--baseline", default=None, help="Baseline model spec (default: the test model, or the run's).")
@click.option("--baseline-strategy", default=None, help="How the baseline sees the persona.")
@click.option("--judge", default=None, help="Judge name or NAME@MODEL_SPEC (default: the task's, or the run's first).")
@click.option("--judge-model", default=None, help="Model the judge runs on (default: the task's, or the run's).")
@click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE",
              help="Judge option over the task's judge.options (with --run: instead of the run's); repeatable.")
@click.option("--persona-source", default=None, help="gold, retrieved, user, ... (default: the task's; not with --run).")
@persona_options
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=None,
              help="A finished run: its settings, recorded personas and, for the judge, its responses.")
@click.option("--seed", type=bounded("seed"), default=None, help="Seed (default: 0, or the run's).")
@click.option("--include-path", "include_paths", multiple=True, type=click.Path(), help="Extra folder of task YAML files.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Local copy of the task's hub dataset (default: $PERSONA_EVAL_DATA_DIR, else the hub).")
@click.option("-n", "--no-newline", is_flag=True, help="Print the bytes alone, with no newline added after them.")
def show_prompt_command(task, split, item, role, criterion, order, model, strategy, baseline, baseline_strategy, judge,
                        judge_model, judge_options, persona_source, retriever, persona_file, persona, on_missing, run_dir,
                        seed, include_paths, data_dir, no_newline):
    """Print exactly what the test model, the baseline or the judge receives for one item.

    The text is the backend's own input (chat template, system text and reply prefix
    included; for an OpenAI endpoint the request's messages as JSON), printed alone on
    stdout so it can be piped and diffed; a newline is added unless it ends with one. No
    model weights are loaded. The judge's responses are {response_A} and {response_B}
    unless --run gives the run's own.
    """
    import sys

    from persona_eval.contracts.factories import close_generators
    from persona_eval.contracts.model_spec import parse_options
    from persona_eval.errors import UsageError

    parsed = parse_options(judge_options, option="--judge-option") if judge_options else None
    source, source_options = persona_source_choice(persona_source, retriever, persona_file, persona, on_missing)
    common = dict(task=task, split=split, item=item, model=model, baseline=baseline, strategy=strategy,
                  baseline_strategy=baseline_strategy, judge=judge, judge_model=judge_model, data_dir=data_dir)
    if run_dir is not None:
        if source is not None or source_options:
            raise UsageError("the persona options do not apply with --run: the run's recorded personas are shown")
        if include_paths:
            raise UsageError("--include-path does not apply with --run: the run's task is read from its config.json")
        options = dict(common, judge_options=parsed, seed=seed)
    else:
        options = dict(common, judge_options=parsed or {}, persona_source=source, persona_source_options=source_options,
                       seed=0 if seed is None else seed, include_paths=tuple(include_paths))
    try:
        text = show_prompt(role=role, criterion=criterion, order=order, run_dir=run_dir, **options)
    finally:
        close_generators()
    # Written as they are (click.echo would drop ANSI escapes when piped): these are the bytes to diff.
    sys.stdout.write(text if no_newline or text.endswith("\n") else text + "\n")
    sys.stdout.flush()


@hookimpl
def register_commands(cli):
    cli.add_command(show_prompt_command)
