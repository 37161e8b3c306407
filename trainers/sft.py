"""PT_sft: supervised fine-tuning of a LoRA adapter with TRL's SFTTrainer.

Rows are prompt/completion pairs (the rendered evaluation input, the preferred response);
the loss covers the completion only. Run it as ``persona-eval train sft ...`` or, for
several GPUs, ``accelerate launch -m persona_eval.trainers.sft --task T --base-model M
--output DIR`` (same options as the command).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """``python -m persona_eval.trainers.sft`` (e.g. under ``accelerate launch``): the command's options."""
    from persona_eval.trainers.commands import run_module

    run_module("sft", argv)


if __name__ == "__main__":
    main()
