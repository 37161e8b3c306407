"""What the pairwise judges (`prometheus`, `gpt-4o`) share: options, identity, the bounded re-ask loop.

`PairwiseJudge` holds a generator backend and the options both judges take (generation
parameters, how many times to ask, whether to use next-token probabilities, whether the
judge writes before its verdict, whether P(A) may settle a reply without a verdict). Its
`compare` asks every pair, parses the verdict that closes each reply, and re-asks the pairs
left without one, up to `max_attempts`; a judge says through its hooks how to read P(A) and
what becomes of the pairs still open. `first_request` is the request of a pair's first ask
(what `show-prompt` prints), `policy` and `departures` what results.json says of the judge.
The prompt, the parser and the wording of the reasons stay in each judge's own module.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from persona_eval.contracts.interfaces import Generator, Judge
from persona_eval.contracts.records import GenParams, GenRequest, GenResult, PairRequest, Verdict
from persona_eval.scoring.usage import add_usage, call_usage, estimate_request_tokens


def reask_params(params: GenParams, attempt: int, min_temperature: float | None = None) -> GenParams:
    """The parameters of ask number `attempt`: a new seed on a re-ask (and, if given, at least `min_temperature`)."""
    if attempt <= 1:
        return params
    temperature = params.temperature if min_temperature is None else max(params.temperature, min_temperature)
    # `replace` keeps every other setting (stop, min_new_tokens, repetition_penalty) as asked.
    return replace(params, temperature=temperature, seed=params.seed + attempt)


def _switch(option: str, value: Any) -> None:
    if not isinstance(value, bool):
        from persona_eval.errors import UsageError

        raise UsageError(f"judge option {option}={str(value)[:40]!r}: expected true or false")


def choice_option(option: str, value: Any, allowed: Sequence[str]) -> str:
    """A judge option that names one of `allowed`; anything else is a one-line usage error."""
    if not isinstance(value, str) or value not in allowed:
        from persona_eval.errors import UsageError

        raise UsageError(f"judge option {option}={str(value)[:40]!r}: expected one of {', '.join(allowed)}")
    return value


# What may settle a reply whose text holds no verdict: "prob_a" (the default, as before this
# option existed): P(A) vs P(B) after the verdict cue, where the backend has probabilities;
# "none": nothing, the pair is asked again and, once the asks are spent, unscored (the paper).
VERDICT_FALLBACKS = ("prob_a", "none")


@dataclass
class Asking:
    """Where one `compare` call stands: kept per call, since a judge may run several calls at once."""

    pairs: Sequence[PairRequest]
    verdicts: list[Verdict | None]
    last: dict[int, GenResult] = field(default_factory=dict)  # each pair's latest reply
    attempts: dict[int, int] = field(default_factory=dict)
    even: dict[int, float] = field(default_factory=dict)  # P(A) of pairs the probabilities could not decide

    def text(self, i: int) -> str:
        return self.last[i].text if i in self.last else ""

    def open(self) -> list[int]:
        return [i for i, verdict in enumerate(self.verdicts) if verdict is None]


@dataclass
class Spent:
    """What one `compare` call's generator calls cost, per pair: asks, re-asks and P(A) probes."""

    index: dict[int, int]  # id(pair) -> its position in the call
    usage: list[dict[str, Any] | None]
    owner: dict[int, PairRequest] = field(default_factory=dict)  # id(probe request) -> its pair

    def add(self, i: int | None, usage: dict[str, Any]) -> None:
        if i is not None:
            self.usage[i] = add_usage(self.usage[i], usage)

    def add_probes(self, generator: Generator, requests: Sequence[GenRequest]) -> None:
        """One call per probe; its input counted by the backend's tokenizer where it has one, else estimated."""
        count = getattr(generator, "count_input_tokens", None)
        counts = count(requests) if callable(count) else None
        for n, request in enumerate(requests):
            pair = self.owner.get(id(request))
            counted = counts is not None and len(counts) == len(requests)
            # A probe reads one next-token distribution: one output position.
            self.add(self.index.get(id(pair)) if pair is not None else None, {
                "requests": 1, "input_tokens": counts[n] if counted else estimate_request_tokens(request), "output_tokens": 1,
                "source": "tokenizer" if counted else "estimated"})


class PairwiseJudge(Judge):
    """A judge that compares two responses and ends its reply with the letter of the better one."""

    name: str
    # The option that turns the written part (feedback, rationale) on: its name is an identity key.
    written_option: str

    def __init__(self, generator: Generator, params: GenParams | None, max_attempts: int, use_logprobs: bool, written: bool,
                 verdict_fallback: str = "prob_a"):
        # A switch given as text on the command line (``feedback=maybe``) would otherwise be truthy.
        _switch("use_logprobs", use_logprobs)
        _switch(self.written_option, written)
        self.verdict_fallback = choice_option("verdict_fallback", verdict_fallback, VERDICT_FALLBACKS)
        self.generator = generator
        self.params = params or GenParams(max_new_tokens=256)
        self.max_attempts = max(1, int(max_attempts))
        self.use_logprobs = bool(use_logprobs)
        # written=False skips the written part and reads the verdict straight from P(A) vs
        # P(B) after the verdict cue: one forward pass per verdict, for small local judges.
        self.written = bool(written)
        self.preferred_batch_size = getattr(generator, "preferred_batch_size", 8)
        # The judge keeps no per-call state: it may run as many calls at once as its backend.
        self.max_concurrent_calls = getattr(generator, "max_concurrent_calls", 1)
        self._logprobs_supported: bool | None = None
        self._warned = False
        # Each `compare` call (a thread of its own) keeps what its generator calls cost in `Spent`;
        # every probe request is tagged with its pair, so its cost lands on that pair's verdict.
        self._local = threading.local()
        probe = self._probe

        def tagged_probe(pair: PairRequest, text: str, attempt: int) -> GenRequest:
            request = probe(pair, text, attempt)
            spent = getattr(self._local, "spent", None)
            if spent is not None:
                spent.owner[id(request)] = pair
            return request

        self._probe = tagged_probe  # type: ignore[method-assign]

    def identity(self) -> dict[str, Any]:
        return {
            "judge": self.name,
            "model": self.generator.identity(),
            "template": self.template_hash(),
            "params": self.params.to_dict(),
            "max_attempts": self.max_attempts,
            "logprobs": self.use_logprobs,
            self.written_option: self.written,
            # Only when not the default: judges that do not set it keep their identities.
            **({"verdict_fallback": self.verdict_fallback} if self.verdict_fallback != "prob_a" else {}),
        }

    def first_request(self, pair: PairRequest) -> GenRequest:
        """The request the judge's first ask for `pair` hands its generator, as it is sent.

        With the written part on, the one `generate` gets. With it off (``feedback=false`` /
        ``rationale=false``) and probabilities asked for, the verdict probe `choice_probs` gets
        (the request with the verdict cue as reply prefix); this assumes the backend has
        probabilities, as hf and vllm always do (one without them gets the written request).
        Nothing here calls the generator, so no model loads.
        """
        if not self.written and self.use_logprobs and self._logprobs_supported is not False:
            return self._probe(pair, "", 1)
        return self._request(pair, 1)

    def policy(self) -> dict[str, Any]:
        """How this judge reaches its verdicts: what config.json and results.json name as ``judge_policy``."""
        if self.written:
            verdict = "read from the text"
        elif self.use_logprobs:
            verdict = "P(A) vs P(B) after the verdict cue, nothing written (a backend without probabilities writes first)"
        else:
            verdict = "read from the text (written=false needs use_logprobs)"
        return {
            "judge": self.name,
            **self._policy_details(),
            "verdict": verdict,
            "verdict_fallback": self.verdict_fallback,
            "max_attempts": self.max_attempts,
            "prob_a": "recorded beside each verdict where the backend has probabilities" if self.use_logprobs else "not asked",
        }

    def departures(self) -> list[str]:
        """Where this judge, on its backend, cannot send what its settings ask (its format; sampling is the harness's)."""
        return []

    # -- what each judge supplies ------------------------------------------------------------

    def template_hash(self) -> str:
        """A short hash of every prompt text the judge sends."""
        raise NotImplementedError

    def _policy_details(self) -> dict[str, Any]:
        """The judge's own part of `policy`: its prompt format, how it is sent, its parser, its re-asks."""
        raise NotImplementedError

    def parse(self, text: str) -> str | None:
        """'A' or 'B' from the verdict that closes `text`, else None."""
        raise NotImplementedError

    def _request(self, pair: PairRequest, attempt: int) -> GenRequest:
        raise NotImplementedError

    def _probe(self, pair: PairRequest, text: str, attempt: int) -> GenRequest:
        """The request whose next token after its reply prefix (`text` and the verdict cue) is the verdict."""
        raise NotImplementedError

    def _probability_only_reason(self, p_a: float | None) -> str:
        """Why a verdict read from probabilities alone (written=False) is unscored."""
        raise NotImplementedError

    def _warn_written_anyway(self) -> None:
        """Say (once) that written=False meets a backend without probabilities, so the judge writes."""
        raise NotImplementedError

    def _settle(self, asking: Asking, unparsed: list[int], attempt: int) -> list[int]:
        """Decide what it can of the pairs whose reply had no verdict; return those to ask again."""
        return unparsed

    def _finish(self, asking: Asking) -> None:
        """Fill the verdicts still open (unscored, with the reason) once the asks are spent."""
        raise NotImplementedError

    # -- judging -------------------------------------------------------------------------------

    def compare(self, pairs: Sequence[PairRequest]) -> list[Verdict]:
        spent = self._local.spent = Spent(index={id(p): i for i, p in enumerate(pairs)}, usage=[None] * len(pairs))
        try:
            verdicts = self._compare(pairs)
        finally:
            self._local.spent = None
        for verdict, usage in zip(verdicts, spent.usage):
            verdict.usage = usage
        return verdicts

    def _compare(self, pairs: Sequence[PairRequest]) -> list[Verdict]:
        if not self.written:
            if self._has_logprobs():
                probs = self._probs([self._probe(pair, "", 1) for pair in pairs])
                return [self._from_probability(p_a, "", 1, self._probability_only_reason(p_a)) for p_a in probs]
            if not self._warned:
                # The demo task asks for a verdict-only small local judge; on a backend without
                # log-probabilities the judge simply writes first.
                self._warn_written_anyway()
                self._warned = True
        asking = self._ask(pairs)
        self._finish(asking)
        return [v for v in asking.verdicts if v is not None]

    def _ask(self, pairs: Sequence[PairRequest]) -> Asking:
        """Ask every pair, then re-ask those `_settle` leaves open, `max_attempts` asks at most."""
        asking = Asking(pairs=pairs, verdicts=[None] * len(pairs))
        pending = list(range(len(pairs)))
        for attempt in range(1, self.max_attempts + 1):
            if not pending:
                break
            requests = [self._request(pairs[i], attempt) for i in pending]
            results = self.generator.generate(requests)
            if len(results) != len(pending):
                raise RuntimeError(f"{self.name}: backend returned {len(results)} results for {len(pending)} requests")
            unparsed = []
            spent = getattr(self._local, "spent", None)
            for i, request, result in zip(pending, requests, results):
                if spent is not None:
                    spent.add(i, call_usage(request, result))
                asking.last[i], asking.attempts[i] = result, attempt
                winner = self.parse(result.text)
                if winner:
                    asking.verdicts[i] = Verdict(winner=winner, raw=result.text, attempts=attempt)
                else:
                    unparsed.append(i)
            pending = self._settle(asking, unparsed, attempt)
        return asking

    def _has_logprobs(self) -> bool:
        if self._logprobs_supported is None:
            self._logprobs_supported = self.use_logprobs and self.generator.choice_probs([], ["A", "B"]) is not None
        return self._logprobs_supported

    def _probs(self, requests: list[GenRequest]) -> list[float | None]:
        """P(A) for each probe request; None for all where the backend gave no (or not all) probabilities."""
        if not requests:
            return []
        probs = self.generator.choice_probs(requests, ["A", "B"])
        if probs is not None and getattr(self._local, "spent", None) is not None:
            self._local.spent.add_probes(self.generator, requests)
        if probs is None or len(probs) != len(requests):
            return [None] * len(requests)
        return [p.get("A") for p in probs]

    @staticmethod
    def _from_probability(p_a: float | None, raw: str, attempts: int, reason: str | None = None) -> Verdict:
        """The verdict P(A) gives; unscored with `reason` where it gives none (missing, or exactly 0.5)."""
        if p_a is None or p_a == 0.5:
            return Verdict(winner=None, raw=raw, prob_a=p_a, unscored_reason=reason, attempts=attempts)
        return Verdict(winner="A" if p_a > 0.5 else "B", raw=raw, prob_a=p_a, attempts=attempts)
