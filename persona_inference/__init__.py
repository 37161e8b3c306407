"""Persona inference (PI): the few-shot prompt, screening of inferred personas, the inferrer,
`infer` over files and datasets, PI accuracy, persona-bias analysis and their commands.
The commands register through `plugins/commands/infer.py`; the `inferred` persona source
through `plugins/personas/inferred.py`.
"""
