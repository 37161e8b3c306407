"""A plugin that imports, then fails while registering its generators."""

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_generators(register):
    raise KeyError("rel/missing-config")
