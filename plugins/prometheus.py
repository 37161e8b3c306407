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
from typing import Any, Sequence

from persona_eval.hookspecs import hookimpl
from persona_eval.interfaces import Generator, Judge
from persona_eval.records import GenParams, GenRequest, PairRequest, Verdict
from persona_eval.util import stable_hash

logger = logging.getLogger("persona_eval.prometheus")

_RESULT_MARK = re.compile(r"\[RESULT\]", re.IGNORECASE)


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


class PrometheusJudge(Judge):
    name = "prometheus"

    def __init__(
        self,
        generator: Generator,
        params: GenParams | None = None,
        max_attempts: int = 2,
        use_logprobs: bool = True,
        feedback: bool = True,
    ):
        self.generator = generator
        # feedback=False skips the written feedback and reads the verdict straight from
        # P(A) vs P(B) after "[RESULT]": one forward pass per verdict, for small CPU judges.
        self.feedback = bool(feedback)
        self.params = params or GenParams(max_new_tokens=256)
        self.max_attempts = max(1, int(max_attempts))
        self.use_logprobs = bool(use_logprobs)
        self.system, self.template = _templates()
        self.preferred_batch_size = getattr(generator, "preferred_batch_size", 8)
        # The judge keeps no per-call state: it may run as many calls at once as its backend.
        self.max_concurrent_calls = getattr(generator, "max_concurrent_calls", 1)
        self._logprobs_supported: bool | None = None
        self._warned = False

    def identity(self) -> dict[str, Any]:
        return {
            "judge": self.name,
            "model": self.generator.identity(),
            "template": stable_hash([self.system, self.template], 16),
            "params": self.params.to_dict(),
            "max_attempts": self.max_attempts,
            "logprobs": self.use_logprobs,
            "feedback": self.feedback,
        }

    def _request(self, pair: PairRequest, attempt: int) -> GenRequest:
        prompt = self.template.format(
            instruction=pair.instruction, response_A=pair.response_a, response_B=pair.response_b, rubric=pair.rubric
        )
        params = self.params
        if attempt > 1:  # a re-ask must be able to say something different
            params = GenParams(
                max_new_tokens=params.max_new_tokens, temperature=max(params.temperature, 0.7),
                top_p=params.top_p, seed=params.seed + attempt, stop=params.stop,
            )
        return GenRequest(id=pair.id, prompt=prompt, params=params, system=self.system)

    def compare(self, pairs: Sequence[PairRequest]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(pairs)
        texts: dict[int, str] = {}
        pending = list(range(len(pairs)))
        attempt = 0
        if not self.feedback:
            if self._has_logprobs():
                pending = []
            elif not self._warned:
                # The demo task asks for feedback=false for its small local judge; on a backend
                # without log-probabilities the judge simply writes its feedback.
                logger.warning("prometheus: feedback=false needs log-probabilities, which this backend lacks; writing feedback")
                self._warned = True
        while pending and attempt < self.max_attempts:
            attempt += 1
            requests = [self._request(pairs[i], attempt) for i in pending]
            results = self.generator.generate(requests)
            still = []
            for i, result in zip(pending, results):
                texts[i] = result.text
                winner = parse_relative(result.text)
                if winner:
                    verdicts[i] = Verdict(winner=winner, raw=result.text, attempts=attempt)
                else:
                    still.append(i)
            pending = still
            if pending and self._has_logprobs():
                break  # the backend can decide from probabilities; no need to re-ask
        self._attach_probabilities(pairs, verdicts, texts, max(attempt, 1))
        return [v for v in verdicts if v is not None]

    def _has_logprobs(self) -> bool:
        if self._logprobs_supported is None:
            self._logprobs_supported = self.use_logprobs and self.generator.choice_probs([], ["A", "B"]) is not None
        return self._logprobs_supported

    def _probe(self, pair: PairRequest, text: str) -> GenRequest:
        found = _RESULT_MARK.search(text)
        feedback = text[: found.start()].rstrip() if found else text.rstrip()
        request = self._request(pair, 1)
        request.response_prefix = f"{feedback} [RESULT] " if feedback else "[RESULT] "
        return request

    def _probabilities_for(self, pairs, indices, texts):
        requests = [self._probe(pairs[i], texts.get(i, "")) for i in indices]
        return self.generator.choice_probs(requests, ["A", "B"])

    def _attach_probabilities(self, pairs, verdicts, texts, attempts) -> None:
        indices = list(range(len(pairs)))
        probs = self._probabilities_for(pairs, indices, texts) if self._has_logprobs() else None
        for i in indices:
            p_a = probs[i]["A"] if probs else None
            verdict = verdicts[i]
            if verdict is not None:
                verdict.prob_a = p_a
                continue
            if p_a is not None and p_a != 0.5:
                verdicts[i] = Verdict(winner="A" if p_a > 0.5 else "B", raw=texts.get(i, ""), prob_a=p_a, attempts=attempts)
            else:
                reason = "no [RESULT] A/B verdict at the end of the judge output"
                if p_a == 0.5:
                    reason = "P(A) = P(B) after [RESULT]" if not self.feedback else reason + ", and P(A) = P(B)"
                reason += f" after {attempts} attempts" if attempts > 1 else ""
                verdicts[i] = Verdict(winner=None, raw=texts.get(i, ""), prob_a=p_a, unscored_reason=reason, attempts=attempts)


@hookimpl
def register_judges(register):
    register("prometheus", PrometheusJudge, aliases=["prometheus2"], description="Prometheus 2 relative grading")
