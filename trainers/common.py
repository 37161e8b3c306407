"""The training driver shared by SFT and DPO: resolve inputs, load, train, save, report.

`train()` checks every input before it creates anything, loads the base model the way the
`hf` generator resolves it (``hf:embedded`` is the embedded SmolLM2), builds the dataset
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

This module imports torch, transformers, TRL and PEFT at import time: import it lazily.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from persona_eval.errors import RunError, UsageError
from persona_eval.trainers.config import TrainConfig
from persona_eval.trainers.data import KINDS, PERSONA_MODES, TrainingData, build_training_data

HF_BACKENDS = ("hf", "transformers", "huggingface")
CHECKPOINTS = "checkpoints"


# -- inputs ---------------------------------------------------------------------------------


@dataclass
class BaseModelRef:
    """A base model resolved exactly as the `hf` generator resolves its model name."""

    name: str
    path: str
    display_name: str
    revision: str | None
    trust_remote_code: bool
    identity: dict[str, Any]

    @property
    def spec(self) -> str:
        """The `--model` spec that loads this base in `persona-eval run`."""
        name = self.name if self.name == "embedded" or not Path(self.path).exists() else str(Path(self.path).resolve())
        options = f",revision={self.revision}" if self.revision else ""
        options += ",trust_remote_code=true" if self.trust_remote_code else ""
        return f"hf:{name}{options}"


def resolve_base(text: str, *, option: str = "--base-model") -> BaseModelRef:
    from persona_eval.contracts import registry
    from persona_eval.contracts.model_spec import parse_model_spec

    text = (text or "").strip()
    if not text:
        raise UsageError(f"{option}: empty model name")
    backend = text.split(":", 1)[0] if ":" in text else ""
    if backend in HF_BACKENDS:
        spec = parse_model_spec(text, option=option)
        name, options = spec.model, dict(spec.options)
    elif backend and not Path(text).exists() and "/" not in backend:
        raise UsageError(f"{option} {text!r}: training needs a Hugging Face model (hf:NAME, a folder or a hub id), not backend {backend!r}")
    else:
        name, options = text, {}
    if "adapter" in options:
        raise UsageError(f"{option} {text!r}: adapter= is not a base model; pass the adapter with --from DIR")
    unknown = sorted(set(options) - {"revision", "trust_remote_code", "dtype", "device", "batch_size", "chat_template"})
    if unknown:
        raise UsageError(f"{option} {text!r}: unknown option(s) {', '.join(unknown)} (allowed: revision, trust_remote_code)")
    local = Path(os.path.expanduser(name))
    if name != "embedded" and (name.startswith((".", "/", "~")) or local.exists()):
        if not (local / "config.json").exists():
            raise UsageError(f"{option} {text!r}: {local} is not a model folder (no config.json)")
    revision = options.get("revision")
    trust = bool(options.get("trust_remote_code", False))
    # The base is loaded the way `persona-eval run --model hf:...` loads it, through the registry
    # (trainers never import a generator plugin), so its identity is the run's identity.
    generator = registry.generators.create("hf", name, device="cpu", revision=revision, trust_remote_code=trust)
    return BaseModelRef(
        name=name, path=generator.path, display_name=generator.display_name, revision=revision,
        trust_remote_code=trust, identity=generator.identity(),
    )


@dataclass
class StartPoint:
    kind: str  # "adapter" or "model"
    path: str
    metadata: dict[str, Any] | None = None
    adapter_hash: str | None = None


def resolve_from(text: str) -> StartPoint:
    path = Path(os.path.expanduser(text))
    if (path / "adapter_config.json").exists():
        from persona_eval.models.fingerprint import weights_fingerprint

        metadata = None
        if (path / "metadata.json").exists():
            try:
                metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
            except ValueError as exc:
                raise UsageError(f"malformed metadata.json: {exc}", where=str(path / "metadata.json")) from exc
        return StartPoint("adapter", str(path.resolve()), metadata, f"sha256:{weights_fingerprint(path)}")
    if path.is_dir():
        if (path / "config.json").exists():
            return StartPoint("model", str(path.resolve()))
        raise UsageError(f"--from {text!r}: neither an adapter folder (no adapter_config.json) nor a model folder (no config.json)")
    if text.startswith((".", "/", "~")) or path.suffix:
        raise UsageError(f"--from {text!r}: no such adapter or model folder")
    return StartPoint("model", text)  # a hub id


def resolve_inputs(base_model: str | None, from_: str | None) -> tuple[BaseModelRef, StartPoint | None]:
    start = resolve_from(from_) if from_ else None
    if start is not None and start.kind == "model":
        if base_model:
            raise UsageError(
                f"--from {from_!r} is a full model, so it is the base of the new adapter; "
                "pass it as --base-model instead (or give --from an adapter folder)"
            )
        return resolve_base(start.path, option="--from"), None
    if start is not None and start.kind == "adapter" and not base_model:
        recorded = (start.metadata or {}).get("base_model", {}).get("spec")
        if not recorded:
            config = json.loads(Path(start.path, "adapter_config.json").read_text(encoding="utf-8"))
            recorded = config.get("base_model_name_or_path")
        if not recorded:
            raise UsageError(f"--from {from_!r}: the adapter does not record its base model; pass --base-model")
        base = resolve_base(recorded, option="--from (recorded base)")
    elif not base_model:
        raise UsageError("--base-model is required (e.g. hf:embedded, a model folder or a hub id)")
    else:
        base = resolve_base(base_model)
    if start is not None and start.metadata:
        recorded_revision = start.metadata.get("base_model", {}).get("identity", {}).get("revision")
        if recorded_revision and recorded_revision != base.identity.get("revision"):
            raise UsageError(
                f"--from {from_!r} was trained on {start.metadata['base_model'].get('spec')} ({recorded_revision}), "
                f"not on {base.spec} ({base.identity.get('revision')})"
            )
    return base, start


def _launcher_rank() -> int:
    """This process's global rank as torchrun / accelerate launch set it (0 when not launched)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def prepare_output(output: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """Check the output folder: new or empty, ours to overwrite, or ours to resume."""
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {str(out)!r} is a file, not a folder")
    entries = list(out.iterdir()) if out.exists() else []
    ours = (out / "metadata.json").exists() or (out / CHECKPOINTS).is_dir()
    if resume:
        if not list((out / CHECKPOINTS).glob("checkpoint-*")):
            raise UsageError(f"--resume: {str(out)!r} holds no checkpoint to resume from")
        return out
    if entries:
        if not overwrite:
            raise UsageError(f"--output {str(out)!r} is not empty; pass --overwrite to replace an earlier training, or --resume")
        if not ours:
            raise UsageError(f"--overwrite: {str(out)!r} is not a persona-eval training output; refusing to delete it")
    return out


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
    """First Ctrl-C: finish the step, save a checkpoint, stop. Second: KeyboardInterrupt now."""

    def __init__(self):
        self.requested = False
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
        if self.requested:
            control.should_training_stop = True
            control.should_save = True  # a full checkpoint, so --resume continues from here

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.requested:
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


def _device_settings(config: TrainConfig) -> tuple[bool, Any, bool, bool]:
    """(use_cpu, weights dtype, bf16 mixed precision, fp16 mixed precision)."""
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device: cuda asked for in the training config, but no CUDA GPU is available")
    use_cpu = config.device == "cpu" or not torch.cuda.is_available()
    if config.dtype == "auto":
        if use_cpu:
            return True, torch.float32, False, False
        bf16 = torch.cuda.is_bf16_supported()
        return False, torch.bfloat16 if bf16 else torch.float32, bf16, False
    dtype = getattr(torch, config.dtype)
    return use_cpu, dtype, dtype == torch.bfloat16, dtype == torch.float16 and not use_cpu


def _checkpointing_field() -> str:
    """transformers 5.x renamed gradient_checkpointing to activation_checkpointing (old name warns)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


_CHECKPOINTING_FIELD = _checkpointing_field()


def common_arguments(kind: str, config: TrainConfig, output_dir: Path, has_eval: bool, max_steps: int | None) -> dict[str, Any]:
    """Arguments shared by SFTConfig and DPOConfig (also used verbatim by bench/training.py)."""
    use_cpu, _, bf16, fp16 = _device_settings(config)
    stage = config.stage(kind)
    steps = max_steps or config.max_steps
    return dict(
        output_dir=str(output_dir / CHECKPOINTS),
        learning_rate=stage.learning_rate,
        num_train_epochs=stage.epochs,
        max_steps=steps if steps else -1,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
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
                  max_steps: int | None, peft_config, callbacks: Sequence[Any]):
    from transformers.trainer_callback import PrinterCallback

    from persona_eval.trainers.builders import MAKERS

    args = common_arguments(kind, config, output_dir, bool(data.eval), max_steps)
    trainer = MAKERS[kind](model, tokenizer, data, config, args, peft_config, list(callbacks))
    # With tqdm off the Trainer prints every log dict; our rich bar shows the losses instead.
    trainer.remove_callback(PrinterCallback)
    return trainer


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
    """Train one adapter (SFT or DPO) and write the output folder; see the module docstring."""
    from persona_eval.taskfile.loading import resolve_task
    from persona_eval.trainers import outputs

    if kind not in KINDS:
        raise UsageError(f"unknown training kind {kind!r}; use one of: {', '.join(KINDS)}")
    if persona not in PERSONA_MODES:
        raise UsageError(f"--persona {persona!r}: use one of: {', '.join(PERSONA_MODES)}")
    if max_steps is not None and max_steps < 1:
        raise UsageError("--max-steps must be at least 1")
    if limit is not None and limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    config = config or TrainConfig()
    task_obj = resolve_task(task, list(include_paths))
    if not task_obj.has_partition("train"):
        raise UsageError(f"task {task_obj.name!r} has no train split (dataset.train is not set)", where=str(task_obj.path))
    base, start = resolve_inputs(base_model, from_)
    main_process = _launcher_rank() == 0
    # Under `accelerate launch` only rank 0 checks and clears the folder: the others would race its deletion.
    out = prepare_output(output, resume=resume, overwrite=overwrite) if main_process else Path(output).expanduser()
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
    # Only now, with every input checked and the model loaded, is the folder touched.
    if not resume and main_process and out.exists() and any(out.iterdir()):
        shutil.rmtree(out)  # --overwrite of an earlier training output, checked above
    out.mkdir(parents=True, exist_ok=True)
    peft_config = lora_config(config) if start is None or start.kind != "adapter" else None
    progress = RichProgressCallback(f"train {kind} ({persona})", enabled=not quiet)
    interrupt = GracefulInterrupt()
    trainer = build_trainer(kind, model, tokenizer, data, config, out, max_steps, peft_config, [progress, interrupt, *extra_callbacks])
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
                f"out of memory training {base.display_name!r} (batch {config.per_device_batch_size}, max length "
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
        trainer, tokenizer, out, kind=kind, task=task_obj, base=base, start=start, persona=persona, data=data,
        config=config, config_path=config_path, max_steps=max_steps, limit=limit, seconds=seconds,
        interrupted=interrupted, hard_stop=hard_stop,
    )
    if not interrupted and not config.keep_checkpoints and trainer.is_world_process_zero():
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return TrainResult(out, metadata, trainer, data)

