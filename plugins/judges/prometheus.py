"""The `prometheus` judge: Prometheus 2 relative (pairwise) grading on any generator backend.

The relative-grading template and system prompt come from the `prometheus-eval` package
itself (0.1.20, the version the paper pinned). The option ``prompt_format`` says how they reach
the model:

- ``chat_template`` (the default): the system prompt and the filled template as a system and a
  user turn, formatted by the backend (the tokenizer's chat template on hf/vllm, chat messages
  on openai);
- ``paper``: what the paper's `run_judge.py` sent through prometheus-eval. Both responses are
  cleaned as run_judge.py cleans them (every "Prompt:" and "<|end_of_text|>" removed, then
  stripped). A raw-completion backend (``accepts_raw_prompt``: hf, vllm) gets the one string
  prometheus-eval builds with fastchat's "mistral" conversation, ``[INST] {system}\n{user}
  [/INST]``, as it is (``GenRequest.raw``); a chat endpoint gets the system and user messages,
  as prometheus-eval's API path (litellm) sends them.

The verdict is the "[RESULT] A|B" of the reply: with ``verdict_parser=anchored`` (the default)
only one that closes the text counts; with ``prometheus_eval`` the package's own parser reads
the whole reply, as the paper's run did. Where the backend exposes next-token probabilities we
record P(A) right after "[RESULT]"; with ``verdict_fallback=prob_a`` (the default) it decides a
reply without a verdict, with ``none`` such a reply is asked again. A verdict still missing
after the bounded re-asks is unscored, with the reason.
"""

from __future__ import annotations

import logging
import re

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest, PairRequest, Verdict
from persona_eval.hashing import stable_hash
from persona_eval.plugins.judges.pairwise import Asking, PairwiseJudge, choice_option, reask_params

logger = logging.getLogger(__name__)

_RESULT_MARK = re.compile(r"\[RESULT\]", re.IGNORECASE)
_NO_RESULT = "no [RESULT] A/B verdict at the end of the judge output"


def _templates():
    # The package's own strings (its import also loads fastchat and asyncio: ~0.15 s, once).
    from prometheus_eval.prompts import REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF

    return REL_SYSTEM_PROMPT, RELATIVE_PROMPT_WO_REF


PROMPT_FORMATS = ("chat_template", "paper")
VERDICT_PARSERS = ("anchored", "prometheus_eval")


def mistral_prompt(system: str, user: str) -> str:
    """The one string prometheus-eval hands vLLM: fastchat's "mistral" conversation of a system and a user turn.

    fastchat's LLAMA2 separator style (which "mistral" uses) opens with ``[INST] {system}\n``
    (``[INST] `` without a system message), adds the first user message and a space, and closes
    with the assistant's empty turn, ``[/INST]``. prometheus-eval's VLLM wrapper strips the string
    before generating. Written out here so the judge never needs fastchat at run time; a test
    builds the same string through prometheus-eval's own `_get_conversation_prompt`.
    """
    text = f"[INST] {system}\n" if system else "[INST] "
    # fastchat writes an empty first message as the bare role tag.
    text += f"{user} " if user else "[INST]"
    return (text + "[/INST]").strip()


def paper_response(text: str) -> str:
    """A response as the paper's run_judge.py handed it to the judge: "Prompt:" and "<|end_of_text|>" removed, stripped.

    The paper's generations stopped on the tokens of "Prompt:" and kept them (and the end-of-text
    marker) in the decoded text; run_judge.py removed both anywhere in the response.
    """
    return text.replace("Prompt:", "").replace("<|end_of_text|>", "").strip()


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

    def __init__(self, generator: Generator, params: GenParams | None = None, max_attempts: int = 2, use_logprobs: bool = True,
                 feedback: bool = True, prompt_format: str = "chat_template", verdict_parser: str = "anchored",
                 verdict_fallback: str = "prob_a"):
        super().__init__(generator, params, max_attempts, use_logprobs, written=feedback, verdict_fallback=verdict_fallback)
        self.prompt_format = choice_option("prompt_format", prompt_format, PROMPT_FORMATS)
        self.verdict_parser = choice_option("verdict_parser", verdict_parser, VERDICT_PARSERS)
        self.system, self.template = _templates()
        # A class attribute of the backend: known without loading any model.
        self.sends_raw = self.prompt_format == "paper" and bool(getattr(generator, "accepts_raw_prompt", False))

    @property
    def feedback(self) -> bool:
        return self.written

    def identity(self):
        identity = super().identity()
        # Only when not the default, so judges that do not set them keep their identities and caches.
        if self.prompt_format != "chat_template":
            identity["prompt_format"] = self.prompt_format
        if self.verdict_parser != "anchored":
            identity["verdict_parser"] = self.verdict_parser
        return identity

    def template_hash(self) -> str:
        return stable_hash([self.system, self.template], 16)

    def parse(self, text: str) -> str | None:
        if self.verdict_parser == "prometheus_eval":
            from prometheus_eval.parser import parse_output

            return parse_output(text, mode="relative")[1]
        return parse_relative(text)

    def _content(self, pair: PairRequest) -> str:
        """The filled relative-grading template (the user turn)."""
        a, b = pair.response_a, pair.response_b
        if self.prompt_format == "paper":
            a, b = paper_response(a), paper_response(b)
        return self.template.format(instruction=pair.instruction, response_A=a, response_B=b, rubric=pair.rubric)

    def _request(self, pair: PairRequest, attempt: int) -> GenRequest:
        # a re-ask must be able to say something different: the prompt stays, so sample
        params = reask_params(self.params, attempt, min_temperature=0.7)
        if self.sends_raw:
            return GenRequest(id=pair.id, prompt=mistral_prompt(self.system, self._content(pair)), params=params, raw=True)
        return GenRequest(id=pair.id, prompt=self._content(pair), params=params, system=self.system)

    def _probe(self, pair: PairRequest, text: str, attempt: int) -> GenRequest:
        # Always the first ask's request: only the feedback before "[RESULT]" is carried over.
        found = _RESULT_MARK.search(text)
        feedback = text[: found.start()].rstrip() if found else text.rstrip()
        request = self._request(pair, 1)
        request.response_prefix = f"{feedback} [RESULT] " if feedback else "[RESULT] "
        if request.raw:
            # The raw string ends at "[/INST]"; the reply the model wrote began with a space there.
            request.response_prefix = " " + request.response_prefix
        return request

    def _policy_details(self) -> dict:
        if self.sends_raw:
            sent = 'one raw string, fastchat "mistral": [INST] {system}\n{user} [/INST] (no chat template)'
        elif self.prompt_format == "paper":
            sent = "system + user chat messages, as prometheus-eval's API (litellm) path sends them"
        else:
            sent = "system + user turns, formatted by the backend (the tokenizer's chat template on hf/vllm)"
        return {
            "prompt_format": self.prompt_format,
            "sent_as": sent,
            "responses": "cleaned as run_judge.py: 'Prompt:' and '<|end_of_text|>' removed, stripped"
                         if self.prompt_format == "paper" else "as generated",
            "verdict_parser": self.verdict_parser,
            "reask": "the same prompt, sampled anew (next seed, temperature at least 0.7)",
        }

    def departures(self) -> list[str]:
        if self.prompt_format == "paper" and not self.sends_raw:
            return ["prompt_format=paper on a chat endpoint: system + user messages, formatted by the server's own "
                    "chat template (the paper's vLLM got the fastchat \"mistral\" string)"]
        return []

    def _probability_only_reason(self, p_a: float | None) -> str:
        return "P(A) = P(B) after [RESULT]" if p_a == 0.5 else _NO_RESULT

    def _warn_written_anyway(self) -> None:
        logger.warning("prometheus: feedback=false needs log-probabilities, which this backend lacks; writing feedback")

    def _settle(self, asking: Asking, unparsed: list[int], attempt: int) -> list[int]:
        if unparsed and self.verdict_fallback == "prob_a" and self._has_logprobs():
            return []  # the backend can decide from probabilities; no need to re-ask
        return unparsed

    def _finish(self, asking: Asking) -> None:
        """P(A) for every pair where the backend has it: recorded next to a text verdict; the verdict only under prob_a."""
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
            after = f" after {attempts} attempts" if attempts > 1 else ""
            if self.verdict_fallback == "none":
                # P(A) stays a record (for the weighted metrics), never the verdict.
                asking.verdicts[i] = Verdict(winner=None, raw=asking.text(i), prob_a=p_a, attempts=attempts,
                                             unscored_reason=_NO_RESULT + after)
                continue
            reason = _NO_RESULT + (", and P(A) = P(B)" if p_a == 0.5 else "") + after
            asking.verdicts[i] = self._from_probability(p_a, asking.text(i), attempts, reason)


@hookimpl
def register_judges(register):
    register("prometheus", PrometheusJudge, aliases=["prometheus2"], description="Prometheus 2 relative grading")
