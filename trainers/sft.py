"""PT_sft: supervised fine-tuning of a LoRA adapter with TRL's SFTTrainer.

Rows are prompt/completion pairs (the rendered evaluation input, the preferred response);
the loss covers the completion only. Run it as ``persona-eval train sft ...`` or, for
several GPUs, ``accelerate launch -m persona_eval.trainers.sft --task T --base-model M
--output DIR`` (same options as the command).
"""

from __future__ import annotations

from typing import Any


def sft_config(args: dict[str, Any]):
    from trl import SFTConfig

    return SFTConfig(**args, completion_only_loss=True, packing=False)


def make_trainer(model, tokenizer, data, config, args: dict[str, Any], peft_config, callbacks: list):
    from trl import SFTTrainer

    train_dataset, eval_dataset = data.datasets()
    return SFTTrainer(
        model=model, args=sft_config(args), train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )


def train_sft(**kwargs):
    """`trainers.common.train("sft", ...)`."""
    from .common import train

    return train("sft", **kwargs)


def main(argv: list[str] | None = None) -> None:
    from persona_eval.plugins.train_command import run_module

    run_module("sft", argv)


if __name__ == "__main__":
    main()
