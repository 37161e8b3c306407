"""The `persona-eval train sft|dpo` command: PT_sft, PT_dpo and baseline DPO adapters.

    persona-eval train sft --task demo --base-model hf:embedded --persona chosen --output out/pt-sft
    persona-eval train dpo --task demo --from out/pt-sft --persona chosen --output out/pt-dpo
    persona-eval train dpo --task demo --base-model hf:embedded --persona none --output out/dpo

The plugin `persona_eval.plugins.commands.train` adds `train_group` to the CLI; `run_module` gives
``accelerate launch -m persona_eval.trainers.sft OPTIONS`` (or ``.dpo``) the same options for
several GPUs; ``--num-processes N`` starts such a launch itself (`trainers.distributed`). Only
click is imported here; the trainers load when a command runs.
"""

from __future__ import annotations

import sys

import click

from persona_eval.limits import bounded
from persona_eval.trainers.distributed import MAX_PROCESSES


def _options(function):
    decorators = [
        click.option("--task", default=None, help="Task name or YAML path (default: demo); its train split is used."),
        click.option("--base-model", default=None,
                     help="Base model: hf:embedded, hf:NAME_OR_PATH[,revision=R], a folder or a hub id. "
                          "Optional with --from ADAPTER (its recorded base is used)."),
        click.option("--from", "from_", default=None, metavar="ADAPTER_OR_MODEL",
                     help="Start from this adapter folder (trained further; for DPO it is also the frozen reference) "
                          "or full model (it becomes the base)."),
        click.option("--persona", type=click.Choice(["chosen", "none", "all"]), default="chosen", show_default=True,
                     help="chosen: prompt + chosen persona (PT); none: prompt only (baseline); "
                          "all: chosen persona and, preference reversed, rejected persona."),
        click.option("--output", required=True, type=click.Path(), help="Output folder (adapter, tokenizer, metadata.json, README.md)."),
        click.option("--config", "config_path", default=None, type=click.Path(),
                     help="YAML or TOML file with hyper-parameters (defaults follow the paper)."),
        click.option("--max-steps", type=bounded("max_steps"), default=None, help="Stop after N optimizer steps."),
        click.option("--limit", type=bounded("limit"), default=None, help="Use only the first N train items (0 = all)."),
        # Bounded here rather than in limits.NUMERIC: only the trainers have these options.
        click.option("--num-processes", type=click.IntRange(1, MAX_PROCESSES), default=None,
                     help="Train data-parallel in N processes (one per GPU; on CPU, N processes over gloo), "
                          "relaunched under accelerate. Default: this process alone."),
        click.option("--effective-batch-size", type=click.IntRange(1, 1_000_000), default=None,
                     help="Samples per optimizer step over all processes (overrides effective_batch_size in --config); "
                          "keeps training the same whatever --num-processes."),
        click.option("--include-path", "include_paths", multiple=True, type=click.Path(), help="Extra folder of task YAML files."),
        click.option("--resume", is_flag=True, help="Continue an interrupted training in --output from its last checkpoint."),
        click.option("--overwrite", is_flag=True, help="Replace an earlier training output in --output."),
        click.option("--quiet", is_flag=True, help="No progress display."),
        click.option("--json", "as_json", is_flag=True, help="Print metadata.json to stdout when done."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _train(kind: str, task, base_model, from_, persona, output, config_path, max_steps, limit, num_processes,
           effective_batch_size, include_paths, resume, overwrite, quiet, as_json) -> None:
    from persona_eval.display.quiet import quiet_library_progress
    from persona_eval.errors import UsageError
    from persona_eval.trainers import distributed
    from persona_eval.trainers.config import load_config

    if quiet:
        quiet_library_progress()
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    config = load_config(config_path)
    if effective_batch_size is not None:
        config = config.model_copy(update={"effective_batch_size": effective_batch_size})
    if num_processes is not None and distributed.world_size() > 1:
        raise UsageError(f"--num-processes: already one of {distributed.world_size()} launched processes; "
                         "leave it out under accelerate launch or torchrun")
    if num_processes is not None and num_processes > 1:
        _launch(kind, dict(task=task, base_model=base_model, from_=from_, persona=persona, output=output,
                           config_path=config_path, max_steps=max_steps, limit=limit, effective_batch_size=effective_batch_size,
                           include_paths=include_paths, resume=resume, overwrite=overwrite, quiet=quiet, as_json=as_json),
                config, num_processes)
        return
    from persona_eval.trainers.common import train

    result = train(
        kind, task=task, base_model=base_model, from_=from_, persona=persona, output=output, config=config,
        config_path=config_path, max_steps=max_steps, limit=limit, include_paths=include_paths, resume=resume,
        overwrite=overwrite, quiet=quiet,
    )
    meta = result.metadata
    if not result.trainer.is_world_process_zero():
        return
    if as_json:
        import json

        click.echo(json.dumps(meta, indent=2, default=str))
    losses = meta["losses"]

    def fmt(value):
        return "n/a" if value is None else f"{value:.4f}"

    click.echo(
        f"{meta['status']}: {kind} ({persona}) {meta['steps']['global_step']} steps in {meta['seconds']:.1f}s, "
        f"train loss {fmt(losses['train_loss'])}, best eval loss {fmt(losses['best_eval_loss'])} -> {result.output_dir}",
        err=True,
    )
    click.echo(f"evaluate: persona-eval run --task {meta['task']['name']} --model {meta['evaluate_with']['model']} "
               f"--strategy {meta['evaluate_with']['strategy']}", err=True)
    if meta["interrupted"]:
        click.echo("Interrupted: the adapter above is usable; add --resume to the same command to finish training.", err=True)
        if not distributed.mark_interrupted():  # under --num-processes the caller exits 130
            sys.exit(130)


def _launch(kind: str, options: dict, config, num_processes: int) -> None:
    """`--num-processes N`: check the inputs here, then train in N workers (`trainers.distributed`)."""
    from persona_eval.trainers import distributed
    from persona_eval.trainers.inputs import _device_settings, check_inputs

    checked = check_inputs(
        kind, task=options["task"], base_model=options["base_model"], output=options["output"], persona=options["persona"],
        from_=options["from_"], config=config, max_steps=options["max_steps"], limit=options["limit"],
        resume=options["resume"], overwrite=options["overwrite"], include_paths=options["include_paths"],
        world_size=num_processes,
    )
    command = sft_command if kind == "sft" else dpo_command
    code = distributed.launch(kind, command, options, num_processes=num_processes, use_cpu=_device_settings(config)[0],
                              out=checked.out, resume=options["resume"])
    if code:
        sys.exit(code)


@click.group(name="train")
def train_group() -> None:
    """Train PT_sft, PT_dpo or baseline DPO LoRA adapters (TRL + PEFT)."""


@train_group.command(name="sft")
@_options
def sft_command(**options):
    """Supervised fine-tuning: input (prompt [+ persona]) -> preferred response."""
    _train("sft", **options)


@train_group.command(name="dpo")
@_options
def dpo_command(**options):
    """DPO: preferred over other response given (prompt [+ persona]); --from an SFT adapter for PT_dpo."""
    _train("dpo", **options)


def run_module(kind: str, argv: list[str] | None = None) -> None:
    """`python -m persona_eval.trainers.sft|dpo` (e.g. under `accelerate launch`): same options, same errors."""
    from persona_eval.errors import PersonaEvalError, short_line
    from persona_eval.trainers import distributed

    command = sft_command if kind == "sft" else dpo_command
    try:
        command.main(args=list(sys.argv[1:] if argv is None else argv), prog_name=f"python -m persona_eval.trainers.{kind}",
                     standalone_mode=False)
    except PersonaEvalError as exc:
        # Under --num-processes the caller prints the first worker's error, once.
        if not distributed.report_worker_error(str(exc), exc.exit_code):
            prefix = f"rank {distributed.rank()}: " if distributed.world_size() > 1 else ""
            click.echo(f"Error: {prefix}{exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except Exception as exc:
        if distributed.control_dir() is None:
            raise
        import traceback

        distributed.report_worker_error(short_line(f"{type(exc).__name__}: {exc}"), 1, traceback.format_exc())
        sys.exit(1)

