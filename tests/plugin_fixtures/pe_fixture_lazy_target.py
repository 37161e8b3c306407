"""The target of a lazy "module:attr" registration; importing it is observable in sys.modules."""

from persona_eval.contracts.interfaces import Judge
from persona_eval.contracts.records import Verdict


class CoinJudge(Judge):
    """Prefers the response with more characters (A on equal length)."""

    def __init__(self, generator=None, params=None, max_attempts=1):
        self.generator = generator

    def identity(self):
        return {"judge": "fixture/coin"}

    def compare(self, requests):
        return [Verdict(winner="A" if len(r.response_a) >= len(r.response_b) else "B") for r in requests]
