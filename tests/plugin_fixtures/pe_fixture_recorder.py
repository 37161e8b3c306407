"""A fixture plugin whose observers record what they saw (to show a raising observer stops nobody)."""

from persona_eval.contracts.hookspecs import hookimpl

EVENTS: list[tuple] = []


@hookimpl
def on_run_start(run):
    EVENTS.append(("start", run.task.name))


@hookimpl
def on_sample_end(run, record):
    EVENTS.append(("sample", "criterion" in record))


@hookimpl
def on_run_end(run, results):
    EVENTS.append(("end", results["metrics"]["dpq"]))
