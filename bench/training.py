"""Seconds per training step: our trainer (`persona-eval train`) against plain TRL, same data and settings.

    python bench/training.py [--kind sft|dpo] [--steps 6] [--reps 2] [--max-length 256] [--batch-size 2]

Both sides train the same LoRA (r=16, alpha=32, dropout 0.05, all linear layers) on the same
rows (the demo task's train split, rendered by `trainers.data`), with the same optimizer
settings and no per-epoch evaluation. Ours runs the whole `trainers.common.train` path (rich
progress, Ctrl-C handling, output folder); plain TRL is SFTTrainer/DPOTrainer as its docs
show it. A step is timed from one `on_step_end` to the next, so the first (warm-up) step
and everything before and after training (loading, saving) are left out. The runs
alternate (ours first, then plain first, ...) and each side reports its median. Target: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def intervals(self) -> list[float]:
            return [b - a for a, b in zip(self.ends, self.ends[1:])]

    return StepTimer()


def run_ours(kind, config, steps, limit, work: Path) -> list[float]:
    from persona_eval.trainers.common import train

    timer = step_timer()
    train(kind, task="demo", base_model="hf:embedded", persona="chosen" if kind == "sft" else "none", output=work / "ours",
          config=config, max_steps=steps, limit=limit, quiet=False, overwrite=True, extra_callbacks=[timer])
    return timer.intervals()


def run_plain(kind, config, steps, limit, work: Path) -> list[float]:
    """TRL as its documentation uses it: a model, a LoraConfig, a config object, a dataset."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_eval.plugins.generators.embedded import ensure_embedded_model
    from persona_eval.taskfile.loading import resolve_task
    from persona_eval.trainers.data import build_training_data

    path = str(ensure_embedded_model())
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = build_training_data(resolve_task("demo"), kind, "chosen" if kind == "sft" else "none", tokenizer, limit=limit,
                               eval_fraction=config.eval_fraction, seed=config.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=config.lora.target_modules, task_type="CAUSAL_LM")
    common = dict(
        output_dir=str(work / "plain"), max_steps=steps, per_device_train_batch_size=config.per_device_batch_size,
        logging_steps=config.logging_steps, logging_first_step=True, seed=config.seed, data_seed=config.seed, use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), report_to="none", save_strategy="no",
        max_length=config.max_length, disable_tqdm=True, activation_checkpointing=config.gradient_checkpointing,
    )
    timer = step_timer()
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=model, args=SFTConfig(**common, learning_rate=config.sft.learning_rate),
                             train_dataset=Dataset.from_list(data.train), processing_class=tokenizer, peft_config=lora,
                             callbacks=[timer])
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(**common, learning_rate=config.dpo.learning_rate, beta=config.dpo.beta),
                             train_dataset=Dataset.from_list(data.train), processing_class=tokenizer, peft_config=lora,
                             callbacks=[timer])
    trainer.train()
    return timer.intervals()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["sft", "dpo"], default="sft")
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the first is warm-up, not timed)")
    parser.add_argument("--reps", type=int, default=2, help="runs per side, alternating")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--limit", type=int, default=16, help="train items")
    args = parser.parse_args(argv)
    if args.steps < 3:
        parser.error("--steps must be at least 3 (one warm-up step, two timed intervals)")

    from persona_eval.trainers.config import TrainConfig

    config = TrainConfig(max_length=args.max_length, per_device_batch_size=args.batch_size, eval_fraction=0.0,
                         logging_steps=1)
    ours: list[float] = []
    plain: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pe-bench-train-") as tmp:
        work = Path(tmp)
        for rep in range(args.reps):
            # Alternate which side goes first, so warm caches favour neither.
            sides = [("ours", run_ours), ("plain", run_plain)]
            for name, runner in sides if rep % 2 == 0 else sides[::-1]:
                gc.collect()  # the previous run's trainer and model, so memory does not favour either side
                median = statistics.median(runner(args.kind, config, args.steps, args.limit, work))
                (ours if name == "ours" else plain).append(median)
            print(f"rep {rep + 1}: ours {ours[-1]:.3f} s/step, plain TRL {plain[-1]:.3f} s/step", file=sys.stderr)
    ours_s, plain_s = statistics.median(ours), statistics.median(plain)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.kind} on {device}, batch {args.batch_size}, max length {args.max_length}, "
          f"{args.steps - 1} timed steps x {args.reps} runs per side (load average {load:.1f})")
    print(f"ours:      {ours_s:.3f} s/step")
    print(f"plain TRL: {plain_s:.3f} s/step")
    ratio = ours_s / plain_s
    print(f"ratio:     {ratio:.3f} (target <= 1.05): {'ok' if ratio <= 1.05 else 'over target'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
