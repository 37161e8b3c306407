"""The training driver shared by SFT and DPO: resolve inputs, load, train, save, report.

`train()` checks every input before it creates anything (`trainers.inputs`), loads the base
model the way the `hf` generator resolves it (``hf:embedded`` is the embedded SmolLM2), builds the dataset
with `trainers.data` (the evaluation's own rendering), runs TRL with a PEFT LoRA adapter
and writes the output folder with `trainers.outputs`.

Starting from an adapter (``--from DIR``, e.g. DPO from the PT_sft adapter), the adapter
is loaded *trainable* on the base model and training continues it; for DPO, TRL keeps a
frozen copy of it as the reference policy (its "ref" adapter), so the reference is exactly
the SFT model. The result is one adapter on the original base, which is what
``--model hf:BASE,adapter=DIR`` loads. (Merging the SFT adapter into the base and training
a fresh LoRA would give the same reference, but an adapter that only works on the merged
weights.)

Ctrl-C stops cleanly after the current optimizer step, saves a resumable checkpoint and a
usable adapter marked ``interrupted``; a second Ctrl-C stops at once and still saves the
adapter. ``--resume`` continues from the last checkpoint.

Under a launcher (``--num-processes``, ``accelerate launch``, ``torchrun``) every process runs
`train()` data-parallel and only the main one writes; a fresh training fills a hidden sibling
folder that becomes ``--output`` when complete (`trainers.distributed`).

This module imports torch, transformers, TRL and PEFT at import time: import it lazily.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from persona_eval.errors import RunError, UsageError
from persona_eval.trainers.config import BatchLayout, TrainConfig, batch_layout
from persona_eval.trainers.data import TrainingData, build_training_data

# The input checks live in the light `trainers.inputs` (no transformers), for --num-processes' caller.
from persona_eval.trainers.inputs import (  # noqa: F401 - names kept importable from here
    CHECKPOINTS,
    HF_BACKENDS,
    BaseModelRef,
    CheckedInputs,
    StartPoint,
    _device_settings,
    check_inputs,
    prepare_output,
    resolve_base,
    resolve_from,
    resolve_inputs,
)

# -- progress and Ctrl-C --------------------------------------------------------------------


class RichProgressCallback(TrainerCallback):
    """A rich progress bar with the latest train and eval loss (main process only)."""

    def __init__(self, description: str, enabled: bool = True):
        self.description = description
        self.enabled = enabled
        self._progress = None
        self._task = None
        self.last_loss: float | None = None
        self.last_eval_loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not (self.enabled and state.is_world_process_zero):
            return
        from persona_eval.display.progress import Progress

        # The bar moves once a step; a slow redraw steals no training time.
        self._progress = Progress(fields=("losses",), refresh_per_second=2).__enter__()
        self._task = self._progress.add(self.description, total=state.max_steps, completed=state.global_step)

    def _refresh(self, state) -> None:
        if self._progress is None:
            return
        parts = []
        if self.last_loss is not None:
            parts.append(f"loss {self.last_loss:.4f}")
        if self.last_eval_loss is not None:
            parts.append(f"eval {self.last_eval_loss:.4f}")
        self._progress.update(self._task, completed=state.global_step, losses="  ".join(parts))

    def on_step_end(self, args, state, control, **kwargs):
        self._refresh(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if isinstance(logs.get("loss"), (int, float)):
            self.last_loss = float(logs["loss"])
        if isinstance(logs.get("eval_loss"), (int, float)):
            self.last_eval_loss = float(logs["eval_loss"])
        self._refresh(state)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class GracefulInterrupt(TrainerCallback):
    """First Ctrl-C: finish the step, save a checkpoint, stop. Second: KeyboardInterrupt now.

    Under `--num-processes` the Ctrl-C reaches the caller, which leaves a stop file
    (`trainers.distributed`); with several processes they agree after every step, so all
    stop after the same one (a process that stopped alone would leave the others waiting).
    """

    def __init__(self):
        self.requested = False
        self.stopping = False
        self._previous = None

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
        import sys

        print("\nStopping after this step and saving (Ctrl-C again to stop at once)...", file=sys.stderr, flush=True)

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)

    def uninstall(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_step_end(self, args, state, control, **kwargs):
        from persona_eval.trainers import distributed

        wanted = self.requested or distributed.stop_requested()
        if args.world_size > 1:
            wanted = distributed.any_rank(wanted, args.device)
        if wanted:
            self.requested = self.stopping = True
            control.should_training_stop = True
            control.should_save = True  # a full checkpoint, so --resume continues from here

    def on_epoch_end(self, args, state, control, **kwargs):
        # The agreed flag: a Ctrl-C seen by one process between steps must not skip its evaluation alone.
        if self.stopping:
            control.should_evaluate = False
            control.should_save = False


# -- training -------------------------------------------------------------------------------


@dataclass
class TrainResult:
    output_dir: Path
    metadata: dict[str, Any]
    trainer: Any = field(repr=False, default=None)
    data: TrainingData | None = field(repr=False, default=None)

    @property
    def model(self):
        """The trained PeftModel (unwrapped)."""
        return self.trainer.accelerator.unwrap_model(self.trainer.model)


def _checkpointing_field() -> str:
    """transformers 5.x renamed gradient_checkpointing to activation_checkpointing (old name warns)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


_CHECKPOINTING_FIELD = _checkpointing_field()


def common_arguments(kind: str, config: TrainConfig, output_dir: Path, has_eval: bool, max_steps: int | None,
                     layout: BatchLayout | None = None) -> dict[str, Any]:
    """Arguments shared by SFTConfig and DPOConfig; `layout` defaults to one process's."""
    use_cpu, _, bf16, fp16 = _device_settings(config)
    layout = layout or batch_layout(config, 1)
    stage = config.stage(kind)
    steps = max_steps or config.max_steps
    return dict(
        output_dir=str(output_dir / CHECKPOINTS),
        learning_rate=stage.learning_rate,
        num_train_epochs=stage.epochs,
        max_steps=steps if steps else -1,
        per_device_train_batch_size=layout.per_device_batch_size,
        per_device_eval_batch_size=layout.per_device_batch_size,
        gradient_accumulation_steps=layout.gradient_accumulation_steps,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False if has_eval else None,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=use_cpu,
        # Every LoRA weight takes part in every forward pass: DDP need not search for unused ones.
        ddp_find_unused_parameters=False,
        bf16=bf16,
        fp16=fp16,
        **{_CHECKPOINTING_FIELD: config.gradient_checkpointing},
        report_to="none",
        disable_tqdm=True,
        max_length=config.max_length,
        truncation_mode="keep_start",
    )


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules, bias="none", task_type="CAUSAL_LM",
    )


def load_tokenizer(base: BaseModelRef):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base.path, revision=base.revision, trust_remote_code=base.trust_remote_code)
    except OSError as exc:
        raise RunError(f"cannot load the tokenizer of {base.display_name!r}: {str(exc).splitlines()[0]}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(base: BaseModelRef, config: TrainConfig, start: StartPoint | None):
    from transformers import AutoModelForCausalLM

    _, dtype, _, _ = _device_settings(config)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base.path, revision=base.revision, dtype=dtype, trust_remote_code=base.trust_remote_code
        )
    except OSError as exc:
        raise RunError(f"cannot load base model {base.display_name!r}: {str(exc).splitlines()[0]}") from exc
    model.config.use_cache = False
    if start is not None and start.kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, start.path, is_trainable=True)
    return model


def _disable_library_progress() -> None:
    """datasets' map bars and transformers' weight-loading bar: the rich bar is the one display."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:  # pragma: no cover - datasets is a TRL dependency
        pass


def build_trainer(kind: str, model, tokenizer, data: TrainingData, config: TrainConfig, output_dir: Path,
                  max_steps: int | None, peft_config, callbacks: Sequence[Any], layout: BatchLayout | None = None):
    from transformers.trainer_callback import PrinterCallback

    from persona_eval.trainers.builders import MAKERS

    args = common_arguments(kind, config, output_dir, bool(data.eval), max_steps, layout)
    trainer = MAKERS[kind](model, tokenizer, data, config, args, peft_config, list(callbacks))
    # With tqdm off the Trainer prints every log dict; our rich bar shows the losses instead.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _wait_for_everyone(config: TrainConfig) -> None:
    """A barrier over the launched processes, before the Trainer exists (it reuses this process group)."""
    from accelerate import PartialState

    PartialState(cpu=_device_settings(config)[0]).wait_for_everyone()


def train(
    kind: str,
    *,
    task: str | None,
    base_model: str | None,
    output: str | Path,
    persona: str = "chosen",
    from_: str | None = None,
    config: TrainConfig | None = None,
    config_path: str | None = None,
    max_steps: int | None = None,
    limit: int | None = None,
    quiet: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    include_paths: Sequence[str] = (),
    extra_callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train one adapter (SFT or DPO) and write the output folder; see the module docstring.

    Under a launcher (``accelerate launch``, ``torchrun``, ``--num-processes``) every process
    runs this; they train data-parallel and only the main one writes.
    """
    from persona_eval.trainers import distributed, outputs

    config = config or TrainConfig()
    world = distributed.world_size()
    main_process = distributed.rank() == 0
    checked = check_inputs(
        kind, task=task, base_model=base_model, output=output, persona=persona, from_=from_, config=config,
        max_steps=max_steps, limit=limit, resume=resume, overwrite=overwrite, include_paths=include_paths,
        world_size=world, main_process=main_process,
    )
    task_obj, base, start, out = checked.task, checked.base, checked.start, checked.out
    tokenizer = load_tokenizer(base)
    data = build_training_data(
        task_obj, kind, persona, tokenizer, use_chat_template=config.chat_template, limit=limit,
        eval_fraction=config.eval_fraction, seed=config.seed,
    )
    if not data.train:
        raise UsageError(f"task {task_obj.name!r}: no training rows left after holding out the eval items; lower eval_fraction")
    if resume:
        previous = outputs.read_metadata(out)
        if previous and previous.get("data", {}).get("rows_hash") not in (None, data.data_hash):
            raise UsageError(f"--resume: the training data differs from the interrupted run's ({str(out)!r}); same task, --persona and --limit please")

    _disable_library_progress()
    model = load_model(base, config, start)
    # Only now, with every input checked and the model loaded, is anything written. A fresh
    # training fills a hidden sibling folder that becomes --output once it is complete; a
    # resumed one continues in place (its checkpoints are there).
    work = out if resume else distributed.partial_dir(out)
    try:
        if main_process and not resume:
            shutil.rmtree(work, ignore_errors=True)  # left by a training that was killed
            work.mkdir(parents=True)
        if world > 1:
            _wait_for_everyone(config)  # the others write rng states into the folder's checkpoints
        metadata, trainer, interrupted = _train_into(
            kind, work, out, model, tokenizer, data, config, config_path, checked, persona, max_steps, limit,
            quiet, resume, extra_callbacks,
        )
        if world > 1:
            trainer.accelerator.wait_for_everyone()  # all done reading the checkpoints before they go
        if main_process:
            if not interrupted and not config.keep_checkpoints:
                shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)
            if work != out:
                distributed.publish(work, out, CHECKPOINTS)
    except BaseException:
        if main_process and work != out:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return TrainResult(out, metadata, trainer, data)


def _train_into(kind, work: Path, out: Path, model, tokenizer, data: TrainingData, config: TrainConfig, config_path,
                checked: CheckedInputs, persona: str, max_steps, limit, quiet: bool, resume: bool, extra_callbacks):
    """Run the Trainer writing into `work` and save the result there; (metadata, trainer, interrupted)."""
    from persona_eval.trainers import outputs

    base, start, layout = checked.base, checked.start, checked.layout
    peft_config = lora_config(config) if start is None or start.kind != "adapter" else None
    progress = RichProgressCallback(f"train {kind} ({persona})", enabled=not quiet)
    interrupt = GracefulInterrupt()
    trainer = build_trainer(kind, model, tokenizer, data, config, work, max_steps, peft_config,
                            [progress, interrupt, *extra_callbacks], layout)
    started = time.time()
    hard_stop = False
    interrupt.install()
    try:
        trainer.train(resume_from_checkpoint=True if resume else None)
    except KeyboardInterrupt:
        hard_stop = True
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise RunError(
                f"out of memory training {base.display_name!r} (batch {layout.per_device_batch_size}, max length "
                f"{config.max_length}): lower per_device_batch_size or max_length, or set gradient_checkpointing: true"
            ) from exc
        raise
    finally:
        interrupt.uninstall()
        progress.close()
    seconds = time.time() - started
    interrupted = hard_stop or interrupt.requested
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(unwrapped, "peft_config", {}):
        # DPO's frozen reference copy of a --from adapter: not part of the result.
        unwrapped.delete_adapter("ref")
    metadata = outputs.save(
        trainer, tokenizer, work, kind=kind, task=checked.task, base=base, start=start, persona=persona, data=data,
        config=config, config_path=config_path, max_steps=max_steps, limit=limit, seconds=seconds,
        interrupted=interrupted, hard_stop=hard_stop, final=out, layout=layout,
    )
    return metadata, trainer, interrupted

