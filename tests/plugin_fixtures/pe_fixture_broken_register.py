"""A fixture plugin whose judge registration raises; its generator registration still works."""

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_judges(register):
    raise ValueError("pe_fixture_broken_register exploded while registering judges")


@hookimpl
def register_generators(register):
    register("fixture/survivor", "pe_fixture_lazy_target:CoinJudge")
