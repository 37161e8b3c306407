"""The `inferred` persona source: each test item's persona, inferred at test time by a PI model.

The PI model is ``--pi-model SPEC`` (or ``persona_source_options: {model: SPEC}`` in the task), on
any generator backend; inference runs through `persona_eval.persona_inference.inference`. The
chosen split gets the chosen persona, the rejected split the rejected persona (the responses
swapped). A persona that still fails the format or protected-attribute screen after the re-asks
is used as its best candidate with ``status: dropped`` (``on_invalid=keep``, the default) or
stops the run (``on_invalid=error``).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import PersonaSource
from persona_eval.contracts.records import Example, Persona
from persona_eval.errors import RunError, UsageError
from persona_eval.persona_inference import defaults
from persona_eval.persona_inference.inference import PersonaInferrer, pair_jobs
from persona_eval.persona_inference.prompt import load_exemplars

logger = logging.getLogger(__name__)


class InferredPersonas(PersonaSource):
    """Infers each test item's persona at test time from its own pair with a PI model.

    The chosen split gets the chosen persona, the rejected split the rejected persona (the
    responses swapped). A persona that still fails the format or the protected-attribute
    screen after the re-asks is used as its best candidate with ``status: dropped`` in its
    provenance (``on_invalid=keep``, the default) or stops the run (``on_invalid=error``).
    """

    def __init__(
        self,
        task=None,
        model: str | None = None,
        k: int = defaults.K,
        exemplars: str | None = None,
        max_attempts: int = defaults.MAX_ATTEMPTS,
        max_new_tokens: int = defaults.MAX_NEW_TOKENS,
        max_response_chars: int = defaults.MAX_RESPONSE_CHARS,
        on_invalid: str = "keep",
        seed: int = 0,
        prefix: bool = defaults.USE_PREFIX,
        cut: str = defaults.CUT,
    ):
        if not model:
            raise UsageError(
                "the 'inferred' persona source needs a PI model: pass --pi-model SPEC (e.g. hf:embedded) "
                "or set persona_source_options: {model: SPEC} in the task"
            )
        if on_invalid not in ("keep", "error"):
            raise UsageError(f"inferred: on_invalid must be 'keep' or 'error', got {on_invalid!r}")
        if cut not in defaults.CUTS:
            raise UsageError(f"inferred: cut must be one of {', '.join(defaults.CUTS)}, got {cut!r}")
        from persona_eval.contracts.model_spec import parse_model_spec

        parse_model_spec(str(model), option="--pi-model")
        self.model = str(model)
        self.k = int(k)
        self.exemplars_path = exemplars
        self.max_attempts = int(max_attempts)
        self.params = defaults.gen_params(int(max_new_tokens), defaults.TEMPERATURE, int(seed))
        self.use_prefix = bool(prefix)
        self.cut = cut
        self.max_response_chars = int(max_response_chars)
        self.on_invalid = on_invalid
        self._inferrer: PersonaInferrer | None = None

    def _get_inferrer(self) -> PersonaInferrer:
        if self._inferrer is None:
            from persona_eval.contracts.factories import build_generator

            self._inferrer = PersonaInferrer(
                build_generator(self.model, option="--pi-model"), exemplars=load_exemplars(self.exemplars_path),
                k=self.k, params=self.params, max_attempts=self.max_attempts, max_response_chars=self.max_response_chars,
                use_prefix=self.use_prefix, cut=self.cut,
            )
        return self._inferrer

    def identity(self) -> dict[str, Any]:
        return {"source": "inferred", "pi_model": self.model, "inferrer": self._get_inferrer().identity(), "on_invalid": self.on_invalid}

    def personas(self, examples: Sequence[Example], split: str) -> list[Persona]:
        if split not in ("chosen", "rejected"):
            raise UsageError(f"inferred: unknown split {split!r}")
        for example in examples:
            if not example.chosen.strip() or not example.rejected.strip():
                raise UsageError(f"item {example.id!r} lacks a chosen or rejected response, so no persona can be inferred from it")
        inferrer = self._get_inferrer()
        jobs = [pair_jobs(e.id, e.prompt, e.chosen, e.rejected)[0 if split == "chosen" else 1] for e in examples]
        outcomes = inferrer.infer(jobs)
        failed = [e.id for e, o in zip(examples, outcomes) if o.status != "kept"]
        if failed and self.on_invalid == "error":
            raise RunError(
                f"inferred: {len(failed)} persona(s) failed the format or protected-attribute screen after "
                f"{self.max_attempts} attempt(s), first: {', '.join(failed[:5])}"
            )
        if failed:
            logger.warning("inferred: %d of %d personas failed validation; using their best candidates", len(failed), len(examples))
        personas = []
        for example, outcome in zip(examples, outcomes):
            provenance = {
                "item_id": example.id,
                "side": split,
                "pi_model": self.model,
                "prompt_hash": inferrer.prompt.hash(),
                **outcome.metadata(),
            }
            personas.append(Persona(text=outcome.text or outcome.candidate, source="inferred", provenance=provenance))
        return personas


@hookimpl
def register_persona_sources(register):
    register("inferred", InferredPersonas, description="inferred at test time from the test pair by a PI model (--pi-model)")
