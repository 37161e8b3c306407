"""TRL trainer builders, one per training kind: `sft` (SFTTrainer) and `dpo` (DPOTrainer).

`MAKERS` maps the kind to its builder for `trainers.common.build_trainer`. SFT rows are
prompt/completion pairs and the loss covers the completion only. DPO passes ``ref_model=None``:
TRL then keeps a frozen copy of the (possibly pre-trained) adapter as the reference, so PT_dpo
from a PT_sft adapter has the SFT model as its reference and is one adapter on the original
base. TRL loads only when a builder is called.
"""

from __future__ import annotations

from typing import Any


def sft_config(args: dict[str, Any]):
    from trl import SFTConfig

    return SFTConfig(**args, completion_only_loss=True, packing=False)


def make_sft_trainer(model, tokenizer, data, config, args: dict[str, Any], peft_config, callbacks: list):
    from trl import SFTTrainer

    train_dataset, eval_dataset = data.datasets()
    return SFTTrainer(
        model=model, args=sft_config(args), train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )


def dpo_config(args: dict[str, Any], config):
    from trl import DPOConfig

    # TRL 1.x has no max_prompt_length: max_length with keep_start truncation bounds the pair.
    return DPOConfig(**args, beta=config.dpo.beta, loss_type=[config.dpo.loss_type])


def make_dpo_trainer(model, tokenizer, data, config, args: dict[str, Any], peft_config, callbacks: list):
    from trl import DPOTrainer

    train_dataset, eval_dataset = data.datasets()
    return DPOTrainer(
        model=model, ref_model=None, args=dpo_config(args, config), train_dataset=train_dataset,
        eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )


# Training kind -> builder; `trainers.common.build_trainer` picks from here.
MAKERS = {"sft": make_sft_trainer, "dpo": make_dpo_trainer}
