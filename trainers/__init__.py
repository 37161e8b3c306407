"""PT_sft, PT_dpo and the baseline DPO: LoRA adapters trained with TRL + PEFT.

`config` (hyper-parameters, paper defaults, YAML/TOML files, the batch layout), `data` (SFT/DPO
rows rendered exactly as evaluation renders them), `inputs` (the checks made before anything
loads), `common` (the shared driver), `builders` (TRL's SFTTrainer and DPOTrainer, set up per
kind), `outputs` (adapter folder, metadata, card), `distributed` (``--num-processes``: the
relaunch under accelerate, the hidden work folder), `commands` (`persona-eval train sft|dpo`,
registered by `persona_eval.plugins.commands.train`); `sft` and `dpo` are the ``python -m`` /
``accelerate launch -m`` entry points.
"""
