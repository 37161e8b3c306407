"""The `gpt-4o` judge (alias `openai-judge`): our own pairwise chat prompt on any generator backend.

The judge writes a short rationale and ends with one line, "Verdict: A" or "Verdict: B".
Only a verdict line that closes the text counts (a "Verdict: A" followed by more text
is not a verdict). Where the backend exposes next-token probabilities we also record
P(A) right after "Verdict:", and use it when the text has no verdict (unless
``verdict_fallback=none``: then such a reply is asked again). A reply without a
verdict is re-asked (a bounded number of times, with a reminder appended so that a
deterministic model can answer differently); still nothing is `unscored` with the reason.

Typical use: ``--judge gpt-4o --judge-model openai:gpt-4o`` (any OpenAI-compatible
endpoint with ``base_url=...``); it runs on ``hf:...`` or ``vllm:...`` models too.
"""

from __future__ import annotations

import logging
import re

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest, GenResult, PairRequest, Verdict
from persona_eval.hashing import stable_hash
from persona_eval.plugins.judges.pairwise import Asking, PairwiseJudge, reask_params

logger = logging.getLogger(__name__)

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


class PairwiseVerdictJudge(PairwiseJudge):
    name = "gpt-4o"
    written_option = "rationale"

    def __init__(self, generator: Generator, params: GenParams | None = None, max_attempts: int = 2, use_logprobs: bool = True,
                 rationale: bool = True, verdict_fallback: str = "prob_a"):
        super().__init__(generator, params, max_attempts, use_logprobs, written=rationale, verdict_fallback=verdict_fallback)

    @property
    def rationale(self) -> bool:
        return self.written

    def template_hash(self) -> str:
        return stable_hash([SYSTEM_PROMPT, PROMPT_TEMPLATE, REASK_NOTE, VERDICT_CUE], 16)

    def parse(self, text: str) -> str | None:
        return parse_verdict(text)

    def _policy_details(self) -> dict:
        return {
            "prompt_format": "own chat prompt",
            "sent_as": "system + user turns, formatted by the backend",
            "verdict_parser": 'a final "Verdict: A|B" line',
            "reask": "with a reminder appended to the prompt (next seed)",
        }

    # -- requests ------------------------------------------------------------------------

    def _prompt(self, pair: PairRequest, attempt: int) -> str:
        prompt = PROMPT_TEMPLATE.format(
            instruction=pair.instruction.strip(), rubric=pair.rubric.strip(),
            response_a=pair.response_a.strip(), response_b=pair.response_b.strip(),
        )
        return prompt + (REASK_NOTE if attempt > 1 else "")

    def _request(self, pair: PairRequest, attempt: int) -> GenRequest:
        # The reminder in the prompt is what lets a deterministic model answer differently.
        params = reask_params(self.params, attempt)
        return GenRequest(id=pair.id, prompt=self._prompt(pair, attempt), params=params, system=SYSTEM_PROMPT)

    def _probe(self, pair: PairRequest, text: str, attempt: int) -> GenRequest:
        request = self._request(pair, attempt)
        rationale = _rationale(text)
        request.response_prefix = f"{rationale}\n{VERDICT_CUE} " if rationale else f"{VERDICT_CUE} "
        return request

    # -- judging -------------------------------------------------------------------------

    def _probability_only_reason(self, p_a: float | None) -> str:
        return "P(A) = P(B) after 'Verdict:'" if p_a is not None else "the backend gave no probabilities"

    def _warn_written_anyway(self) -> None:
        logger.warning("%s: rationale=false needs log-probabilities, which this backend lacks; asking for a rationale", self.name)

    def _settle(self, asking: Asking, unparsed: list[int], attempt: int) -> list[int]:
        """A backend with probabilities decides what the text left open, before re-asking (fallback prob_a)."""
        if not (unparsed and self.verdict_fallback == "prob_a" and self._has_logprobs()):
            return unparsed
        probs = self._probs([self._probe(asking.pairs[i], asking.last[i].text, attempt) for i in unparsed])
        still = []
        for i, p_a in zip(unparsed, probs):
            if p_a is not None and p_a != 0.5:
                asking.verdicts[i] = self._from_probability(p_a, asking.last[i].text, attempt)
                asking.even.pop(i, None)
            else:
                if p_a is not None:
                    asking.even[i] = p_a
                still.append(i)
        return still

    def _finish(self, asking: Asking) -> None:
        for i in asking.open():
            attempts = asking.attempts.get(i, self.max_attempts)
            reason = _unscored_reason(asking.last.get(i), attempts)
            asking.verdicts[i] = Verdict(
                winner=None, raw=asking.text(i), attempts=attempts, prob_a=asking.even.get(i),
                unscored_reason=reason + (", and P(A) = P(B)" if i in asking.even else ""),
            )
        # P(A) for text verdicts too, where the backend has it (recorded, not used).
        if self._has_logprobs():
            need = [i for i, v in enumerate(asking.verdicts) if v is not None and v.winner and v.prob_a is None]
            probs = self._probs([self._probe(asking.pairs[i], asking.last[i].text, asking.attempts[i]) for i in need])
            for i, p_a in zip(need, probs):
                asking.verdicts[i].prob_a = p_a


@hookimpl
def register_judges(register):
    register(
        "gpt-4o", PairwiseVerdictJudge, aliases=["openai-judge"],
        description='pairwise chat judge: short rationale, final "Verdict: A|B" (GPT-4o or any chat model)',
    )
