"""The `gpt-4o` judge (alias `openai-judge`): our own pairwise chat prompt on any generator backend.

The judge writes a short rationale and ends with one line, "Verdict: A" or "Verdict: B".
Only a verdict line that closes the text counts (a "Verdict: A" followed by more text
is not a verdict). Where the backend exposes next-token probabilities we also record
P(A) right after "Verdict:", and use it when the text has no verdict. A reply without a
verdict is re-asked (a bounded number of times, with a reminder appended so that a
deterministic model can answer differently); still nothing is `unscored` with the reason.

Typical use: ``--judge gpt-4o --judge-model openai:gpt-4o`` (any OpenAI-compatible
endpoint with ``base_url=...``); it runs on ``hf:...`` or ``vllm:...`` models too.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Sequence

from persona_eval.hookspecs import hookimpl
from persona_eval.interfaces import Generator, Judge
from persona_eval.records import GenParams, GenRequest, GenResult, PairRequest, Verdict
from persona_eval.util import stable_hash

logger = logging.getLogger("persona_eval.gpt4o_judge")

SYSTEM_PROMPT = (
    "You are a careful, impartial evaluator. You compare two responses to the same request "
    "against one criterion and say which one meets it better."
)

PROMPT_TEMPLATE = """Compare two responses to the same request and decide which one better satisfies the criterion.

## Request
{instruction}

## Criterion
{rubric}

## Response A
{response_a}

## Response B
{response_b}

Judge by the criterion only. Neither the order of the responses nor their length is a reason to prefer one.
First write a short rationale (at most three sentences). Then end your reply with one final line that is exactly "Verdict: A" or "Verdict: B", with nothing after it."""

REASK_NOTE = (
    "\n\nReminder: your previous reply did not end with a verdict line. Answer again, and make the "
    'very last line exactly "Verdict: A" or "Verdict: B".'
)

VERDICT_CUE = "Verdict:"

# The verdict must close the text: "verdict", an optional "is" and separator, optional
# markdown or quotes, an optional "Response", the letter, optional closing decoration, end.
_VERDICT_AT_END = re.compile(
    r"""\bverdict\b (?:[^\S\n]+is\b)? (?:[^\S\n]|[*_`"'(\[:=\-])*
        (?:response[^\S\n]+)? ([AB]) [*_`"')\].!\s]* \Z""",
    re.IGNORECASE | re.VERBOSE,
)


def parse_verdict(text: str) -> str | None:
    """'A' or 'B' from a verdict line that ends the text, else None."""
    match = _VERDICT_AT_END.search(text.rstrip())
    return match.group(1).upper() if match else None


def _rationale(text: str) -> str:
    """The text before its final verdict line (all of it when there is none)."""
    stripped = text.rstrip()
    match = _VERDICT_AT_END.search(stripped)
    return stripped[: match.start()].rstrip() if match else stripped


def _unscored_reason(result: GenResult | None, attempts: int) -> str:
    reason = 'no final "Verdict: A|B" line in the judge output'
    if result is not None:
        if result.finish_reason == "length":
            reason += " (the output was cut at max_new_tokens)"
        elif result.finish_reason not in (None, "stop", "length"):
            reason += f" (finish reason {result.finish_reason!r})"
        if not result.text.strip():
            reason = "empty judge output" + (f" (finish reason {result.finish_reason!r})" if result.finish_reason else "")
    return reason + (f" after {attempts} attempts" if attempts > 1 else "")


class PairwiseVerdictJudge(Judge):
    name = "gpt-4o"

    def __init__(
        self,
        generator: Generator,
        params: GenParams | None = None,
        max_attempts: int = 2,
        use_logprobs: bool = True,
        rationale: bool = True,
    ):
        self.generator = generator
        self.params = params or GenParams(max_new_tokens=256)
        self.max_attempts = max(1, int(max_attempts))
        self.use_logprobs = bool(use_logprobs)
        # rationale=False reads the verdict straight from P(A) vs P(B) after "Verdict:":
        # one forward pass per verdict, for small local judges.
        self.rationale = bool(rationale)
        self.preferred_batch_size = getattr(generator, "preferred_batch_size", 8)
        # The judge keeps no per-call state: it may run as many calls at once as its backend.
        self.max_concurrent_calls = getattr(generator, "max_concurrent_calls", 1)
        self._logprobs_supported: bool | None = None
        self._warned = False

    def identity(self) -> dict[str, Any]:
        return {
            "judge": self.name,
            "model": self.generator.identity(),
            "template": stable_hash([SYSTEM_PROMPT, PROMPT_TEMPLATE, REASK_NOTE, VERDICT_CUE], 16),
            "params": self.params.to_dict(),
            "max_attempts": self.max_attempts,
            "logprobs": self.use_logprobs,
            "rationale": self.rationale,
        }

    # -- requests ------------------------------------------------------------------------

    def _prompt(self, pair: PairRequest, attempt: int) -> str:
        prompt = PROMPT_TEMPLATE.format(
            instruction=pair.instruction.strip(), rubric=pair.rubric.strip(),
            response_a=pair.response_a.strip(), response_b=pair.response_b.strip(),
        )
        return prompt + (REASK_NOTE if attempt > 1 else "")

    def _request(self, pair: PairRequest, attempt: int) -> GenRequest:
        params = self.params
        if attempt > 1:
            params = GenParams(
                max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                top_p=params.top_p, seed=params.seed + attempt, stop=params.stop,
            )
        return GenRequest(id=pair.id, prompt=self._prompt(pair, attempt), params=params, system=SYSTEM_PROMPT)

    def _probe(self, pair: PairRequest, text: str, attempt: int) -> GenRequest:
        request = self._request(pair, attempt)
        rationale = _rationale(text)
        request.response_prefix = f"{rationale}\n{VERDICT_CUE} " if rationale else f"{VERDICT_CUE} "
        return request

    def _has_logprobs(self) -> bool:
        if self._logprobs_supported is None:
            self._logprobs_supported = self.use_logprobs and self.generator.choice_probs([], ["A", "B"]) is not None
        return self._logprobs_supported

    def _probs(self, requests: list[GenRequest]) -> list[float | None]:
        if not requests:
            return []
        probs = self.generator.choice_probs(requests, ["A", "B"])
        if probs is None or len(probs) != len(requests):
            return [None] * len(requests)
        return [p.get("A") for p in probs]

    # -- judging -------------------------------------------------------------------------

    def compare(self, pairs: Sequence[PairRequest]) -> list[Verdict]:
        if not self.rationale and self._has_logprobs():
            probs = self._probs([self._probe(p, "", 1) for p in pairs])
            return [self._from_probability(p_a, "", 1, None) for p_a in probs]
        if not self.rationale and not self._warned:
            logger.warning("%s: rationale=false needs log-probabilities, which this backend lacks; asking for a rationale", self.name)
            self._warned = True

        verdicts: list[Verdict | None] = [None] * len(pairs)
        last: dict[int, GenResult] = {}
        even: dict[int, float] = {}  # P(A) of pairs the probabilities could not decide
        attempts: dict[int, int] = {}
        pending = list(range(len(pairs)))
        for attempt in range(1, self.max_attempts + 1):
            if not pending:
                break
            results = self.generator.generate([self._request(pairs[i], attempt) for i in pending])
            if len(results) != len(pending):
                raise RuntimeError(f"{self.name}: backend returned {len(results)} results for {len(pending)} requests")
            unparsed = []
            for i, result in zip(pending, results):
                last[i], attempts[i] = result, attempt
                winner = parse_verdict(result.text)
                if winner:
                    verdicts[i] = Verdict(winner=winner, raw=result.text, attempts=attempt)
                else:
                    unparsed.append(i)
            # A backend with probabilities decides what the text left open, before re-asking.
            if unparsed and self._has_logprobs():
                probs = self._probs([self._probe(pairs[i], last[i].text, attempt) for i in unparsed])
                still = []
                for i, p_a in zip(unparsed, probs):
                    if p_a is not None and p_a != 0.5:
                        verdicts[i] = self._from_probability(p_a, last[i].text, attempt, last[i])
                        even.pop(i, None)
                    else:
                        if p_a is not None:
                            even[i] = p_a
                        still.append(i)
                unparsed = still
            pending = unparsed
        for i in pending:
            reason = _unscored_reason(last.get(i), attempts.get(i, self.max_attempts))
            verdicts[i] = Verdict(
                winner=None, raw=last[i].text if i in last else "", attempts=attempts.get(i, self.max_attempts),
                prob_a=even.get(i), unscored_reason=reason + (", and P(A) = P(B)" if i in even else ""),
            )
        # P(A) for text verdicts too, where the backend has it (recorded, not used).
        if self._has_logprobs():
            need = [i for i, v in enumerate(verdicts) if v is not None and v.winner and v.prob_a is None]
            probs = self._probs([self._probe(pairs[i], last[i].text, attempts[i]) for i in need])
            for i, p_a in zip(need, probs):
                verdicts[i].prob_a = p_a
        return [v for v in verdicts if v is not None]

    def _from_probability(self, p_a: float | None, text: str, attempts: int, result: GenResult | None) -> Verdict:
        if p_a is None or p_a == 0.5:
            reason = "P(A) = P(B) after 'Verdict:'" if p_a is not None else "the backend gave no probabilities"
            return Verdict(winner=None, raw=text, prob_a=p_a, unscored_reason=reason, attempts=attempts)
        return Verdict(winner="A" if p_a > 0.5 else "B", raw=text, prob_a=p_a, attempts=attempts)


@hookimpl
def register_judges(register):
    register(
        "gpt-4o", PairwiseVerdictJudge, aliases=["openai-judge"],
        description='pairwise chat judge: short rationale, final "Verdict: A|B" (GPT-4o or any chat model)',
    )
