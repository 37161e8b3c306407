"""A second namespace with the same bare judge name as pe_fixture_good, so bare "coin" is ambiguous."""

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_judges(register):
    register("other/coin", "pe_fixture_lazy_target:CoinJudge")
    register("other/broken-target", "pe_fixture_no_such_module:Nothing")
