"""A fixture plugin whose observer hooks all raise: they must be logged, never fatal."""

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def on_run_start(run):
    raise RuntimeError("observer failed at run start")


@hookimpl
def on_sample_end(run, record):
    raise RuntimeError("observer failed at sample end")


@hookimpl
def on_run_end(run, results):
    raise RuntimeError("observer failed at run end")
