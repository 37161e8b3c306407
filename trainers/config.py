"""Training hyper-parameters: defaults from the paper, overridable by a YAML or TOML file.

Defaults (Balepur et al. 2025): LoRA r=16, alpha=32, dropout 0.05; SFT learning rate 2e-5,
DPO learning rate 5e-6 with beta 0.1; sequences cut at 512 tokens. Each epoch ends with an
evaluation on a held-out slice of the train split and the best epoch (lowest eval loss) is
what gets saved. Unknown keys are errors and every message names the file and line.

A config file holds any subset of the fields below, e.g.::

    max_length: 512
    per_device_batch_size: 4
    lora: {r: 16, alpha: 32, dropout: 0.05}
    sft: {learning_rate: 2.0e-5, epochs: 3}
    dpo: {learning_rate: 5.0e-6, epochs: 3, beta: 0.1}

`batch_layout` turns the batch settings into the per-device batch and gradient accumulation for
a number of processes (``effective_batch_size`` keeps the optimisation the same across them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from persona_eval.errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    r: int = Field(default=16, ge=1, le=4096)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    # PEFT's shorthand for every linear layer except the output head.
    target_modules: str | list[str] = "all-linear"


class StageSettings(_Strict):
    learning_rate: float = Field(gt=0.0, lt=1.0)
    epochs: float = Field(default=3.0, gt=0.0)


class SFTSettings(StageSettings):
    learning_rate: float = Field(default=2e-5, gt=0.0, lt=1.0)


class DPOSettings(StageSettings):
    learning_rate: float = Field(default=5e-6, gt=0.0, lt=1.0)
    beta: float = Field(default=0.1, gt=0.0)
    loss_type: str = "sigmoid"


class TrainConfig(_Strict):
    lora: LoraSettings = Field(default_factory=LoraSettings)
    sft: SFTSettings = Field(default_factory=SFTSettings)
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    max_length: int = Field(default=512, ge=16)
    per_device_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    # Samples per optimizer step over all processes. Set, it fixes the optimisation whatever the
    # number of processes: per_device_batch_size becomes a cap and the accumulation is derived
    # (`batch_layout`); unset, the effective size is per-device x accumulation x processes.
    effective_batch_size: int | None = Field(default=None, ge=1)
    lr_scheduler: str = "linear"
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    # Share of the train items held out for the per-epoch evaluation; 0 turns evaluation off.
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 0
    logging_steps: int = Field(default=10, ge=1)
    # Off by default: it costs ~20% speed and LoRA on models up to a few billion parameters fits without it.
    gradient_checkpointing: bool = False
    # auto: float32 on CPU, bfloat16 weights with bf16 mixed precision on a GPU that supports it.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Must match how the model is evaluated (`hf:...,chat_template=false` turns it off there).
    chat_template: bool = True
    keep_checkpoints: bool = False
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many optimizer steps")

    def stage(self, kind: str) -> StageSettings:
        return self.sft if kind == "sft" else self.dpo


@dataclass(frozen=True)
class BatchLayout:
    """How the samples of one optimizer step are spread over processes and micro-batches."""

    per_device_batch_size: int
    gradient_accumulation_steps: int
    world_size: int

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps * self.world_size

    def to_dict(self) -> dict[str, int]:
        return {"world_size": self.world_size, "per_device_batch_size": self.per_device_batch_size,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "effective_batch_size": self.effective_batch_size}


def batch_layout(config: TrainConfig, world_size: int) -> BatchLayout:
    """The per-device batch and accumulation for `world_size` processes.

    Without ``effective_batch_size`` the config's two numbers are used as they are. With it, each
    process gets ``effective / world_size`` samples a step, in micro-batches of the largest size
    that divides them and is at most ``per_device_batch_size`` (the memory cap); the rest is
    gradient accumulation. So 1 process x 2 micro-batches of 2 and 2 processes x 1 micro-batch
    of 2 both take the same 4 samples a step, in the same order (accelerate deals the shuffled
    micro-batches out to the processes in turn).
    """
    if world_size < 1:
        raise UsageError(f"the number of processes must be at least 1, not {world_size}")
    wanted = config.effective_batch_size
    if wanted is None:
        return BatchLayout(config.per_device_batch_size, config.gradient_accumulation_steps, world_size)
    if "gradient_accumulation_steps" in config.model_fields_set and config.gradient_accumulation_steps != 1:
        raise UsageError("set effective_batch_size or gradient_accumulation_steps, not both "
                         "(the accumulation is derived from the effective batch size)")
    if wanted % world_size:
        raise UsageError(f"effective batch size {wanted} is not a multiple of the {world_size} processes; "
                         f"use a multiple of {world_size} or another number of processes")
    per_process = wanted // world_size
    micro = max(d for d in range(1, min(per_process, config.per_device_batch_size) + 1) if per_process % d == 0)
    return BatchLayout(micro, per_process // micro, world_size)


def load_config(path: str | Path | None) -> TrainConfig:
    """The config in a YAML (.yaml/.yml) or TOML (.toml) file, or the defaults when path is None."""
    if path is None:
        return TrainConfig()
    from persona_eval.taskfile.yaml_lines import read_text

    path = Path(path)
    text = read_text(path, "config file")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        data, locate = _parse_yaml(text, path)
    elif suffix == ".toml":
        data, locate = _parse_toml(text, path)
    else:
        raise UsageError(f"unsupported config file type {suffix or '(none)'!r}: use .yaml, .yml or .toml", where=str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError("a config file must be a mapping (key: value pairs)", where=f"{path}:1")
    return _validate(data, path, locate)


def _validate(data: dict[str, Any], path: Path, locate) -> TrainConfig:
    from pydantic import ValidationError

    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        message = {"extra_forbidden": "unknown setting", "missing": "required setting is missing"}.get(error["type"], error["msg"])
        if error["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            import difflib

            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            message += f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        line = locate(loc)
        raise UsageError(f"{dotted}: {message}{more}", where=f"{path}:{line}" if line else str(path)) from exc


def _known_keys(parent: tuple) -> list[str]:
    model: type[BaseModel] = TrainConfig
    for part in parent:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _parse_yaml(text: str, path: Path):
    from persona_eval.taskfile.yaml_lines import _node_line, parse_yaml

    data, root = parse_yaml(text, path)
    return data, lambda loc: _node_line(root, loc)


def _parse_toml(text: str, path: Path):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message ends "(at line L, column C)"; lift the line into the location.
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise UsageError(f"invalid TOML: {message}", where=f"{path}:{match.group(1)}" if match else str(path)) from exc
    return data, lambda loc: _toml_line(text, loc)


def _toml_line(text: str, loc: tuple) -> int | None:
    """The line of a key in a TOML file: inside its [table] when nested, else at the top."""
    keys = [str(p) for p in loc if not isinstance(p, int)]
    if not keys:
        return None
    table, key = ".".join(keys[:-1]), keys[-1]
    current, fallback = "", None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1)
            if table and current == table and fallback is None:
                fallback = number
            continue
        assigned = re.match(r"^([A-Za-z0-9_.\"'-]+)\s*=", stripped)
        if not assigned:
            continue
        name = assigned.group(1).strip("\"'")
        full = f"{current}.{name}" if current else name
        if full == ".".join(keys) or (current == table and name == key):
            return number
        if table and full == table and fallback is None:  # inline table: `lora = {r = 8}`
            fallback = number
    return fallback
