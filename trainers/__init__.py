"""PT_sft, PT_dpo and the baseline DPO: LoRA adapters trained with TRL + PEFT.

`config` (hyper-parameters, paper defaults, YAML/TOML files), `data` (SFT/DPO rows rendered
exactly as evaluation renders them), `common` (the shared driver), `sft` and `dpo` (the TRL
trainers; runnable with ``accelerate launch -m``), `outputs` (adapter folder, metadata, card).
The command is `persona-eval train sft|dpo` (plugins/train_command.py).
"""
