"""The training output folder: adapter, tokenizer, metadata.json and a short model card.

    DIR/adapter_config.json, adapter_model.safetensors   the LoRA adapter (PEFT)
    DIR/tokenizer*.json, chat_template.jinja             the tokenizer it was trained with
    DIR/metadata.json    base model identity, task and data hashes, persona mode,
                         hyper-parameters, final losses, package versions, status,
                         and `distributed`: world size, per-device batch, accumulation,
                         effective batch size (samples per optimizer step), backend
    DIR/README.md        model card: what it is and how to evaluate it
    DIR/checkpoints/     trainer checkpoints; removed after a complete run unless
                         keep_checkpoints is set, kept after Ctrl-C for --resume

metadata.json is written last and atomically: a folder without it is not a finished output.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from persona_eval.storage.files import atomic_write_json, atomic_write_text

SCHEMA = "persona-eval/adapter@1"
STRATEGY_FOR_MODE = {"chosen": "pt", "all": "pt", "none": "baseline"}


def read_metadata(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / "metadata.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def losses_from(log_history: list[dict[str, Any]], best_metric: Any) -> dict[str, Any]:
    """Final losses from the trainer's log history (train mean, last logged, eval, best eval)."""
    out: dict[str, Any] = {"train_loss": None, "last_loss": None, "last_loss_step": None, "eval_loss": None,
                           "best_eval_loss": _number(best_metric)}
    for entry in log_history:
        if _number(entry.get("train_loss")) is not None:
            out["train_loss"] = float(entry["train_loss"])
        if _number(entry.get("loss")) is not None:
            out["last_loss"], out["last_loss_step"] = float(entry["loss"]), entry.get("step")
        if _number(entry.get("eval_loss")) is not None:
            out["eval_loss"] = float(entry["eval_loss"])
        for key in ("rewards/accuracies", "rewards/margins", "eval_rewards/accuracies", "eval_rewards/margins"):
            if _number(entry.get(key)) is not None:
                out[key] = float(entry[key])
    if out["train_loss"] is None:  # stopped before the trainer's final summary
        out["train_loss"] = out["last_loss"]
    out["finite"] = all(v is None or math.isfinite(v) for k, v in out.items() if k != "last_loss_step" and isinstance(v, float))
    return out


def _device(trainer) -> str:
    args = trainer.args
    if args.use_cpu or str(args.device) == "cpu":
        return "cpu" if args.world_size == 1 else f"{args.world_size} x cpu"
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else str(args.device)
    return f"{args.world_size} x {name}"


def _checkpoint_step(path: str | None) -> int | None:
    """The step of the best checkpoint (the folder itself is removed after a complete run)."""
    if not path:
        return None
    tail = Path(path).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _lora_settings(model) -> dict[str, Any]:
    config = getattr(model, "peft_config", {}).get("default")
    if config is None:
        return {}
    targets = config.target_modules
    return {"r": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
            "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple)) else targets}


def save(trainer, tokenizer, out: Path, *, kind, task, base, start, persona, data, config, config_path, max_steps,
         limit, seconds, interrupted, hard_stop, final: Path | None = None, layout=None) -> dict[str, Any]:
    """Save adapter and tokenizer (all processes), then the card and metadata (main process).

    `out` is the folder written now; `final` is where it will live (the paths recorded point
    there); `layout` is the `config.BatchLayout` trained with (one process's when None).
    """
    from persona_eval.models.fingerprint import weights_fingerprint
    from persona_eval.trainers import distributed
    from persona_eval.trainers.config import batch_layout
    from persona_eval.trainers.data import summary
    from persona_eval.versions import package_versions

    final = final or out
    layout = layout or batch_layout(config, trainer.args.world_size)

    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        # A pickle of the Trainer's arguments: metadata.json holds them as JSON, and a file
        # that differs with the output path would make identical adapters hash differently.
        (out / "training_args.bin").unlink(missing_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    state = trainer.state
    losses = losses_from(state.log_history, state.best_metric)
    stage = config.stage(kind)
    strategy = STRATEGY_FOR_MODE[persona]
    hyper = config.model_dump(mode="json")
    hyper.update(
        stage=kind, learning_rate=stage.learning_rate, epochs=stage.epochs, max_steps=max_steps or config.max_steps,
        lora_effective=_lora_settings(model), optimizer=trainer.args.optim, bf16=trainer.args.bf16,
        # What was trained with: with effective_batch_size set, the config's own numbers are caps.
        **layout.to_dict(),
    )
    if kind == "dpo":
        hyper["beta"] = config.dpo.beta
    steps_done = state.global_step
    metadata: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": kind,
        "status": "interrupted" if interrupted else "complete",
        "interrupted": bool(interrupted),
        "stopped_mid_step": bool(hard_stop),
        "task": {"name": task.name, "version": task.spec.version, "hash": task.task_hash, "data_hash": task.data_hash,
                 "path": str(task.path)},
        "persona_mode": persona,
        "strategy": strategy,
        "evaluate_with": {"model": f"{base.spec},adapter={final.resolve()}",
                          "strategy": strategy if persona != "none" else "inline"},
        "base_model": {"spec": base.spec, "path": base.path, "identity": base.identity},
        "started_from": None if start is None else {"kind": start.kind, "path": start.path, "adapter_hash": start.adapter_hash,
                                                    "stage": (start.metadata or {}).get("kind")},
        "data": {**summary(data), "limit": limit, "split": "train"},
        "hyperparameters": hyper,
        "config_file": str(Path(config_path).resolve()) if config_path else None,
        "distributed": {**layout.to_dict(), "num_machines": distributed.num_machines(), "backend": distributed.backend()},
        "losses": losses,
        "steps": {"global_step": steps_done, "max_steps": state.max_steps, "epoch": state.epoch,
                  "best_step": _checkpoint_step(state.best_model_checkpoint)},
        "seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / steps_done, 4) if steps_done else None,
        "device": _device(trainer),
        "versions": package_versions(["accelerate", "datasets"]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv[:],
        "log_history": state.log_history,
    }
    if trainer.is_world_process_zero():
        metadata["adapter_hash"] = f"sha256:{weights_fingerprint(out)}"
        atomic_write_text(out / "README.md", model_card(metadata))
        atomic_write_json(out / "metadata.json", metadata)
    return metadata


def model_card(meta: dict[str, Any]) -> str:
    title = {("sft", "chosen"): "PT_sft", ("dpo", "chosen"): "PT_dpo", ("dpo", "none"): "baseline DPO",
             ("sft", "none"): "baseline SFT"}.get((meta["kind"], meta["persona_mode"]), f"{meta['kind'].upper()} ({meta['persona_mode']} personas)")
    losses = meta["losses"]
    hyper = meta["hyperparameters"]
    lora = hyper.get("lora_effective") or hyper["lora"]
    batch = meta["distributed"]
    status = "" if not meta["interrupted"] else "\n**Interrupted** at step {}: usable, but not the full schedule; rerun with `--resume` to finish.\n".format(meta["steps"]["global_step"])

    def fmt(value):
        return "n/a" if value is None else f"{value:.4f}"

    return f"""# {title} adapter for {meta['base_model']['identity'].get('model')}

A LoRA adapter trained with persona-eval ({meta['kind'].upper()}, TRL + PEFT) on the train split of
task `{meta['task']['name']}` (version {meta['task']['version']}, task hash {meta['task']['hash']}), persona mode
`{meta['persona_mode']}` (inputs rendered with the `{meta['strategy']}` strategy, exactly as evaluation renders them).
{status}
| | |
|---|---|
| base model | `{meta['base_model']['spec']}` ({meta['base_model']['identity'].get('revision')}) |
| started from | {('`' + meta['started_from']['path'] + '`') if meta['started_from'] else 'the base model'} |
| LoRA | r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')} |
| learning rate / epochs | {hyper['learning_rate']} / {hyper['epochs']} (max steps: {hyper['max_steps'] or 'none'}) |
| rows (train / eval) | {meta['data']['train_rows']} / {meta['data']['eval_rows']} (rows hash {meta['data']['rows_hash']}) |
| batch per step | {batch['effective_batch_size']} = {batch['per_device_batch_size']} per device x {batch['gradient_accumulation_steps']} accumulated x {batch['world_size']} process(es) |
| steps | {meta['steps']['global_step']} |
| train loss (mean) / last / best eval | {fmt(losses['train_loss'])} / {fmt(losses['last_loss'])} / {fmt(losses['best_eval_loss'])} |
| device | {meta['device']} |

Evaluate it:

    persona-eval run --task {meta['task']['name']} --model {meta['evaluate_with']['model']} --strategy {meta['evaluate_with']['strategy']}

Everything else (hyper-parameters, package versions, the log history) is in `metadata.json`.
"""
