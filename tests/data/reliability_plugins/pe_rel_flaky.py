"""A generator and a judge that fail on demand at call time (see README.md)."""

import hashlib
import os

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator, Judge
from persona_eval.contracts.records import GenResult, Verdict


def _failing(variable: str, calls: int) -> bool:
    return os.environ.get(variable, "") == str(calls)


class FlakyGenerator(Generator):
    preferred_batch_size = 2

    def __init__(self, model, explode=False):
        if explode:
            raise ValueError("explode=true: the flaky backend refuses to start")
        self.model = model
        self.calls = 0

    def identity(self):
        return {"backend": "rel/flaky", "model": self.model}

    def generate(self, requests):
        self.calls += 1
        if _failing("PE_REL_FAIL_GENERATE", self.calls):
            raise RuntimeError(f"CUDA out of memory in batch {self.calls}")
        return [GenResult(text=f"{self.model} says {hashlib.sha256(r.prompt.encode()).hexdigest()[:12]} " * 3,
                          finish_reason="stop") for r in requests]


class GrumpyJudge(Judge):
    preferred_batch_size = 4

    def __init__(self, generator=None, params=None, max_attempts=1):
        self.calls = 0

    def identity(self):
        return {"judge": "rel/grumpy"}

    def compare(self, requests):
        self.calls += 1
        if _failing("PE_REL_FAIL_COMPARE", self.calls):
            raise ConnectionError(f"judge backend went away at call {self.calls}")
        verdicts = []
        for r in requests:
            pick = hashlib.sha256((r.response_a + "|" + r.response_b).encode()).digest()[0] % 2
            verdicts.append(Verdict(winner="AB"[pick], raw=f"[RESULT] {'AB'[pick]}"))
        return verdicts


@hookimpl
def register_generators(register):
    register("rel/flaky", FlakyGenerator, description="test generator that fails on demand")


@hookimpl
def register_judges(register):
    register("rel/grumpy", GrumpyJudge, description="test judge that fails on demand")
