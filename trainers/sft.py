"""``python -m persona_eval.trainers.sft``: PT_sft, a LoRA adapter fine-tuned with TRL's SFTTrainer.

The same options and errors as ``persona-eval train sft`` (`trainers.commands.run_module`), for
several GPUs: ``accelerate launch -m persona_eval.trainers.sft --task T --base-model M --output DIR``.
Rows pair the rendered evaluation input with the response to learn (`trainers.data`); the trainer
is built in `trainers.builders` and driven by `trainers.common`.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """``python -m persona_eval.trainers.sft`` (e.g. under ``accelerate launch``): the command's options."""
    from persona_eval.trainers.commands import run_module

    run_module("sft", argv)


if __name__ == "__main__":
    main()
