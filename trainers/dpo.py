"""PT_dpo and baseline DPO: preference tuning of a LoRA adapter with TRL's DPOTrainer.

PT_dpo starts from the PT_sft adapter (``--from SFT_DIR --persona chosen``): the adapter is
loaded trainable and TRL keeps a frozen copy as the reference (``ref_model=None``), so the
reference policy is the SFT model and the result is one adapter on the original base. The
baseline DPO (``--persona none``) never sees a persona. Run it as ``persona-eval train dpo
...`` or, for several GPUs, ``accelerate launch -m persona_eval.trainers.dpo ...``.
"""

from __future__ import annotations

from typing import Any


def dpo_config(args: dict[str, Any], config):
    from trl import DPOConfig

    # TRL 1.x has no max_prompt_length: max_length with keep_start truncation bounds the pair.
    return DPOConfig(**args, beta=config.dpo.beta, loss_type=[config.dpo.loss_type])


def make_trainer(model, tokenizer, data, config, args: dict[str, Any], peft_config, callbacks: list):
    from trl import DPOTrainer

    train_dataset, eval_dataset = data.datasets()
    return DPOTrainer(
        model=model, ref_model=None, args=dpo_config(args, config), train_dataset=train_dataset,
        eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )


def train_dpo(**kwargs):
    """`trainers.common.train("dpo", ...)`."""
    from .common import train

    return train("dpo", **kwargs)


def main(argv: list[str] | None = None) -> None:
    from persona_eval.plugins.train_command import run_module

    run_module("dpo", argv)


if __name__ == "__main__":
    main()
