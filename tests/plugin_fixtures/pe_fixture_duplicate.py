"""A fixture plugin that re-registers built-in and fixture names, and one invalid name."""

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_judges(register):
    register("prometheus", "pe_fixture_lazy_target:CoinJudge")
    register("fixture/coin", "pe_fixture_lazy_target:CoinJudge")


@hookimpl
def register_persona_sources(register):
    register("not a valid name!", "pe_fixture_lazy_target:CoinJudge")
