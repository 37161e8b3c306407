"""Checking a training's inputs before anything heavy loads: base model, start point, output, batch.

`check_inputs` resolves the base model the way the `hf` generator does (``hf:embedded`` is the
embedded SmolLM2), the ``--from`` adapter or model, the output folder (new, ours to overwrite,
or ours to resume) and the batch layout for the number of processes, raising a one-line
`UsageError` on the first bad one. `trainers.common.train` runs it in every process; the caller
of ``--num-processes`` runs it once before it starts any. torch loads only to look for a GPU
(`_device_settings`); transformers, TRL and PEFT not at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import UsageError
from persona_eval.trainers.config import BatchLayout, TrainConfig, batch_layout
from persona_eval.trainers.data import KINDS, PERSONA_MODES

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


@dataclass
class CheckedInputs:
    """Everything `train` needs that can be checked before a model is loaded or a file written."""

    task: Any
    base: BaseModelRef
    start: StartPoint | None
    out: Path
    layout: BatchLayout


def check_inputs(
    kind: str,
    *,
    task: str | None,
    base_model: str | None,
    output: str | Path,
    persona: str,
    from_: str | None,
    config: TrainConfig,
    max_steps: int | None,
    limit: int | None,
    resume: bool,
    overwrite: bool,
    include_paths: Sequence[str],
    world_size: int,
    main_process: bool = True,
) -> CheckedInputs:
    """Check the inputs of a training (UsageError on the first bad one); also run by `--num-processes`' caller."""
    from persona_eval.taskfile.loading import resolve_task

    if kind not in KINDS:
        raise UsageError(f"unknown training kind {kind!r}; use one of: {', '.join(KINDS)}")
    if persona not in PERSONA_MODES:
        raise UsageError(f"--persona {persona!r}: use one of: {', '.join(PERSONA_MODES)}")
    if max_steps is not None and max_steps < 1:
        raise UsageError("--max-steps must be at least 1")
    if limit is not None and limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    layout = batch_layout(config, world_size)
    task_obj = resolve_task(task, list(include_paths))
    if not task_obj.has_partition("train"):
        raise UsageError(f"task {task_obj.name!r} has no train split (dataset.train is not set)", where=str(task_obj.path))
    base, start = resolve_inputs(base_model, from_)
    # Under a launcher only rank 0 checks and clears the folder: the others would race its deletion.
    out = prepare_output(output, resume=resume, overwrite=overwrite) if main_process else Path(output).expanduser()
    return CheckedInputs(task_obj, base, start, out, layout)
