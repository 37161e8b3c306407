"""`PersonaInferrer`: batched, cached persona inference (PI) on any generator backend.

Each `PersonaJob` (one side of a pair; `pair_jobs` makes both) becomes a request rendered by
`prompt.PersonaPrompt` (the paper's layout and decoding settings, see `defaults`) and answered
through the result cache (`persona_eval.pipeline.cached_map`,
stage ``persona_inference``); the answer is cleaned and screened by `screening`. A persona that
fails the format or the protected-attribute screen is asked again (at temperature 0.7 or more,
with a note on what was wrong) and dropped after the last attempt. `PersonaOutcome` keeps the
attempts, flags and raw outputs of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest, GenResult
from persona_eval.errors import RunError, UsageError
from persona_eval.hashing import stable_hash
from persona_eval.persona_inference import defaults
from persona_eval.persona_inference.prompt import (
    REASK_NOTES,
    SYSTEM_PROMPT,
    Exemplar,
    PersonaPrompt,
    load_exemplars,
)
from persona_eval.persona_inference.screening import (
    PERSONA_PREFIX,
    format_problem,
    normalize_persona,
    screen_adversarial,
    screen_protected,
)

STAGE = "persona_inference"


@dataclass
class PersonaJob:
    """One persona to infer: the user preferred `preferred` over `other` for `prompt`."""

    key: str
    prompt: str
    preferred: str
    other: str


@dataclass
class PersonaOutcome:
    text: str  # the final persona ("" when dropped)
    status: str  # "kept" or "dropped"
    attempts: int
    candidate: str = ""  # the last cleaned candidate (kept for inspection when dropped)
    reason: str | None = None  # why it was dropped
    protected: list[dict[str, str]] = field(default_factory=list)  # terms flagged at any attempt
    adversarial: list[str] = field(default_factory=list)  # flags on the final candidate
    raw: list[str] = field(default_factory=list)  # raw model output per attempt
    cached: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "attempts": self.attempts,
            "reason": self.reason,
            "candidate": self.candidate,
            "flags": {
                "protected": self.protected,
                "adversarial": self.adversarial,
                "reasked": self.attempts > 1,
            },
            "raw": self.raw,
        }


class PersonaInferrer:
    """Infers personas for jobs in batches through the result cache, re-asking failures."""

    def __init__(
        self,
        generator: Generator,
        *,
        exemplars: Sequence[Exemplar] | None = None,
        k: int = defaults.K,
        params: GenParams | None = None,
        max_attempts: int = defaults.MAX_ATTEMPTS,
        max_response_chars: int = defaults.MAX_RESPONSE_CHARS,
        use_prefix: bool = defaults.USE_PREFIX,
        cut: str = defaults.CUT,
        cache=None,
        executor=None,
        spec: str | None = None,
    ):
        from persona_eval.storage.cache import ResultCache

        if max_attempts < 1:
            raise UsageError("--max-attempts must be at least 1")
        if cut not in defaults.CUTS:
            raise UsageError(f"cut must be one of {', '.join(defaults.CUTS)}, got {cut!r}")
        self.generator = generator
        self.prompt = PersonaPrompt(exemplars if exemplars is not None else load_exemplars(), k, max_response_chars)
        self.params = params or defaults.gen_params()
        self.max_attempts = max_attempts
        self.use_prefix = use_prefix
        self.cut = cut
        self.cache = cache if cache is not None else ResultCache()
        # --executor ray: misses go to workers that build the generator from its spec (`spec`).
        self.executor = executor if spec else None
        self.spec = spec
        # Tokens count the calls computed here (estimated where the backend counted nothing), not cache hits.
        self.stats = {"requests": 0, "cached": 0, "computed": 0, "input_tokens": 0, "output_tokens": 0}

    def identity(self) -> dict[str, Any]:
        return {
            "generator": self.generator.identity(),
            "prompt": self.prompt.identity(),
            "params": self.params.to_dict(),
            "max_attempts": self.max_attempts,
            "prefix": self.use_prefix,
            "cut": self.cut,
        }

    def run_key(self) -> str:
        return stable_hash(self.identity(), 16)

    def request(self, job: PersonaJob, attempt: int, problem: str | None = None) -> GenRequest:
        params = self.params
        if attempt > 1:
            # A re-ask must be able to say something different from the greedy first answer.
            params = replace(params, temperature=max(params.temperature, 0.7), seed=params.seed + attempt - 1)
        note = REASK_NOTES.get(problem or "", "")
        return GenRequest(
            id=job.key,
            prompt=self.prompt.render(job.prompt, job.preferred, job.other, note),
            params=params,
            system=SYSTEM_PROMPT,
            response_prefix=PERSONA_PREFIX if self.use_prefix else "",
        )

    def _generate(self, requests: list[GenRequest]) -> tuple[list[GenResult], list[bool]]:
        from persona_eval.pipeline.cached_map import cached_map
        from persona_eval.pipeline.generate import decode_result, encode_result
        from persona_eval.scoring.usage import call_usage

        results: list[GenResult | None] = [None] * len(requests)
        hit: list[bool] = [False] * len(requests)

        def on_result(index: int, result: GenResult, cached: bool) -> None:
            results[index] = result
            hit[index] = cached
            if not cached:
                usage = call_usage(requests[index], result)
                self.stats["input_tokens"] += usage["input_tokens"]
                self.stats["output_tokens"] += usage["output_tokens"]

        stats = cached_map(
            stage=STAGE,
            identity=self.generator.identity(),
            inputs=requests,
            payload=GenRequest.cache_input,
            compute=self.generator.generate,
            # The generate stage's cache values: usage fields where the backend gave them, old values read too.
            encode=encode_result,
            decode=decode_result,
            cache=self.cache,
            batch_size=max(1, getattr(self.generator, "preferred_batch_size", 8)),
            on_result=on_result,
            executor=self.executor,
            work=self._work(),
        )
        for key in ("cached", "computed"):
            self.stats[key] += stats[key]
        self.stats["requests"] += len(requests)
        if any(r is None for r in results):
            raise RunError(f"{STAGE}: the generator returned no result for some requests")
        return results, hit  # type: ignore[return-value]

    def _work(self):
        if self.executor is None:
            return None
        from persona_eval.executors.work import GenerateWork

        return GenerateWork(spec=self.spec, option="--model")

    def infer(self, jobs: Sequence[PersonaJob]) -> list[PersonaOutcome]:
        outcomes = [PersonaOutcome(text="", status="dropped", attempts=0) for _ in jobs]
        problems: dict[int, str | None] = {i: None for i in range(len(jobs))}
        pending = list(range(len(jobs)))
        attempt = 0
        while pending and attempt < self.max_attempts:
            attempt += 1
            requests = [self.request(jobs[i], attempt, problems[i]) for i in pending]
            results, hits = self._generate(requests)
            still = []
            for i, result, cached in zip(pending, results, hits):
                outcome = outcomes[i]
                outcome.attempts = attempt
                outcome.raw.append(result.text)
                outcome.cached += int(cached)
                candidate = normalize_persona(result.text, prefixed=self.use_prefix, cut=self.cut)
                outcome.candidate = candidate
                problem = format_problem(candidate)
                protected = screen_protected(candidate)
                outcome.protected.extend(p for p in protected if p not in outcome.protected)
                if problem is None and not protected:
                    outcome.text, outcome.status, outcome.reason = candidate, "kept", None
                    continue
                if protected:
                    problems[i] = "protected"
                    terms = ", ".join(sorted({f"{p['category']} ({p['term']})" for p in protected}))
                    outcome.reason = f"protected attribute: {terms}"
                else:
                    problems[i] = "format"
                    outcome.reason = f"format: {problem}"
                still.append(i)
            pending = still
        for outcome in outcomes:
            outcome.adversarial = screen_adversarial(outcome.text or outcome.candidate)
        return outcomes


def pair_jobs(item_id: str, prompt: str, chosen: str, rejected: str) -> tuple[PersonaJob, PersonaJob]:
    """The chosen persona (chosen preferred) and the rejected persona (the responses swapped)."""
    return (
        PersonaJob(f"{item_id}/chosen", prompt, chosen, rejected),
        PersonaJob(f"{item_id}/rejected", prompt, rejected, chosen),
    )
