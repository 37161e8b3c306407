"""PT_dpo and baseline DPO: preference tuning of a LoRA adapter with TRL's DPOTrainer.

PT_dpo starts from the PT_sft adapter (``--from SFT_DIR --persona chosen``): the adapter is
loaded trainable and TRL keeps a frozen copy as the reference (``ref_model=None``), so the
reference policy is the SFT model and the result is one adapter on the original base. The
baseline DPO (``--persona none``) never sees a persona. Run it as ``persona-eval train dpo
...`` or, for several GPUs, ``accelerate launch -m persona_eval.trainers.dpo ...``.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """``python -m persona_eval.trainers.dpo`` (e.g. under ``accelerate launch``): the command's options."""
    from persona_eval.trainers.commands import run_module

    run_module("dpo", argv)


if __name__ == "__main__":
    main()
