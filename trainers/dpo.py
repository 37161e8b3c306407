"""``python -m persona_eval.trainers.dpo``: PT_dpo and baseline DPO adapters with TRL's DPOTrainer.

The same options and errors as ``persona-eval train dpo`` (`trainers.commands.run_module`), for
several GPUs: ``accelerate launch -m persona_eval.trainers.dpo ...``. PT_dpo starts from the PT_sft
adapter (``--from SFT_DIR --persona chosen``) and keeps it, frozen, as the reference policy; the
baseline DPO (``--persona none``) never sees a persona. The trainer is built in
`trainers.builders` and driven by `trainers.common`.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """``python -m persona_eval.trainers.dpo`` (e.g. under ``accelerate launch``): the command's options."""
    from persona_eval.trainers.commands import run_module

    run_module("dpo", argv)


if __name__ == "__main__":
    main()
