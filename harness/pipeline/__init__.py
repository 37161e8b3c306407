"""The evaluation run as stages around one run context: personas -> generate -> judge ->
score -> results. `persona-eval run` enters at the first stage, `persona-eval judge RUN_DIR`
at the judge stage of a finished run.
"""
