"""The `prometheus` judge: Prometheus 2 relative (pairwise) grading on any generator backend.

The prompt template, system prompt and output parser come from the `prometheus-eval`
package itself. The verdict is the "[RESULT] A|B" at the end of the feedback. Where the
backend exposes next-token probabilities we also record P(A) right after "[RESULT]",
and use it as the verdict when the text has none. A verdict still missing after the
bounded re-asks is unscored, with the reason.
"""

from __future__ import annotations

import logging
import re

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest, PairRequest
from persona_eval.hashing import stable_hash
from persona_eval.plugins.judges.pairwise import Asking, PairwiseJudge, reask_params

logger = logging.getLogger(__name__)

_RESULT_MARK = re.compile(r"\[RESULT\]", re.IGNORECASE)
_NO_RESULT = "no [RESULT] A/B verdict at the end of the judge output"


def _templates():
    # prometheus_eval.prompts imports only fastchat's conversation module: cheap.
    from prometheus_eval.prompts import REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF

    return REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF


_BARE_LETTER = re.compile(r"[\s(\[]*[AB][\s)\].]*", re.IGNORECASE)
_TRAILING_DECORATION = re.compile(r"[\s*_`\"'.!]+$")


def parse_relative(text: str) -> str | None:
    """The "[RESULT] A|B" verdict that closes the text, read by prometheus-eval's own parser.

    The package's pattern runs in MULTILINE mode, so on its own it also accepts a
    "[RESULT] A" that ends an earlier line with more text after it. We hand it only the
    last line (plus the line before when the last is a bare letter, as in "[RESULT]\nA"),
    so the verdict it finds is the one that ends the output.
    """
    from prometheus_eval.parser import parse_output

    stripped = _TRAILING_DECORATION.sub("", text or "")
    lines = stripped.splitlines()
    if not lines:
        return None
    tail = lines[-1]
    if len(lines) > 1 and _BARE_LETTER.fullmatch(tail):
        tail = lines[-2] + "\n" + tail
    _, result = parse_output(tail, mode="relative")
    return result


class PrometheusJudge(PairwiseJudge):
    name = "prometheus"
    written_option = "feedback"

    def __init__(self, generator: Generator, params: GenParams | None = None, max_attempts: int = 2, use_logprobs: bool = True, feedback: bool = True):
        super().__init__(generator, params, max_attempts, use_logprobs, written=feedback)
        self.system, self.template = _templates()

    @property
    def feedback(self) -> bool:
        return self.written

    def template_hash(self) -> str:
        return stable_hash([self.system, self.template], 16)

    def parse(self, text: str) -> str | None:
        return parse_relative(text)

    def _request(self, pair: PairRequest, attempt: int) -> GenRequest:
        prompt = self.template.format(
            instruction=pair.instruction, response_A=pair.response_a, response_B=pair.response_b, rubric=pair.rubric
        )
        # a re-ask must be able to say something different: the prompt stays, so sample
        params = reask_params(self.params, attempt, min_temperature=0.7)
        return GenRequest(id=pair.id, prompt=prompt, params=params, system=self.system)

    def _probe(self, pair: PairRequest, text: str, attempt: int) -> GenRequest:
        # Always the first ask's request: only the feedback before "[RESULT]" is carried over.
        found = _RESULT_MARK.search(text)
        feedback = text[: found.start()].rstrip() if found else text.rstrip()
        request = self._request(pair, 1)
        request.response_prefix = f"{feedback} [RESULT] " if feedback else "[RESULT] "
        return request

    def _probability_only_reason(self, p_a: float | None) -> str:
        return "P(A) = P(B) after [RESULT]" if p_a == 0.5 else _NO_RESULT

    def _warn_written_anyway(self) -> None:
        logger.warning("prometheus: feedback=false needs log-probabilities, which this backend lacks; writing feedback")

    def _settle(self, asking: Asking, unparsed: list[int], attempt: int) -> list[int]:
        if unparsed and self._has_logprobs():
            return []  # the backend can decide from probabilities; no need to re-ask
        return unparsed

    def _finish(self, asking: Asking) -> None:
        """P(A) for every pair where the backend has it: recorded next to a text verdict, else the verdict."""
        indices = range(len(asking.pairs))
        if self._has_logprobs():
            probs = self._probs([self._probe(asking.pairs[i], asking.text(i), 1) for i in indices])
        else:
            probs = [None] * len(indices)
        for i, p_a in zip(indices, probs):
            verdict = asking.verdicts[i]
            if verdict is not None:
                verdict.prob_a = p_a
                continue
            attempts = asking.attempts.get(i, 1)
            reason = _NO_RESULT + (", and P(A) = P(B)" if p_a == 0.5 else "")
            reason += f" after {attempts} attempts" if attempts > 1 else ""
            asking.verdicts[i] = self._from_probability(p_a, asking.text(i), attempts, reason)


@hookimpl
def register_judges(register):
    register("prometheus", PrometheusJudge, aliases=["prometheus2"], description="Prometheus 2 relative grading")
