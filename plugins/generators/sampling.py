"""Seeded sampling for the local backends (`hf`, `vllm`, `gguf`), and the answer-choice tokens.

`request_seed` derives a request's sampling seed from the run's seed and the exact rendered
input, nothing else, so a sampled answer does not depend on which other requests share its
batch. `make_seeded_sampler` is the `hf` backend's logits processor that draws each row from
its own generator seeded that way. `choice_token_ids` gives the first token of each answer
choice, bare and after a space, for `choice_probs` in `hf` and `vllm`. `unapplied_params` says
which of a request's optional settings (min_new_tokens, repetition_penalty) a backend cannot
apply, in the words results.json lists under the run's departures.
"""

from __future__ import annotations

from typing import Sequence

from persona_eval.contracts.records import GenParams
from persona_eval.hashing import stable_hash

# Backend -> the optional GenParams settings it has no way to apply, and why. The local
# backends (hf: transformers' generate; vllm: SamplingParams min_tokens / repetition_penalty)
# apply both, so they have no entry.
UNAPPLIABLE: dict[str, dict[str, str]] = {
    "openai": {
        "min_new_tokens": "the OpenAI chat API has no minimum length",
        "repetition_penalty": "the OpenAI chat API has no such parameter (its frequency and presence "
                              "penalties are other formulas)",
    },
}
# The value at which a setting changes nothing: asking for it is no departure anywhere.
_NEUTRAL = {"min_new_tokens": 0, "repetition_penalty": 1.0}


def hf_generate_settings(params: GenParams) -> dict[str, object]:
    """transformers ``generate`` keywords for the optional settings that are set (none: {})."""
    out: dict[str, object] = {}
    if params.min_new_tokens is not None:
        out["min_new_tokens"] = int(params.min_new_tokens)
    if params.repetition_penalty is not None:
        out["repetition_penalty"] = float(params.repetition_penalty)
    return out


def unapplied_params(backend: str, params: GenParams) -> list[str]:
    """The settings of `params` that `backend` cannot apply, one sentence each ([] when it applies all)."""
    out = []
    for name, why in UNAPPLIABLE.get(backend, {}).items():
        value = getattr(params, name)
        if value is not None and value != _NEUTRAL[name]:
            out.append(f"{name}={value} not applied: {backend} backend: {why}")
    return out


def choice_token_ids(tokenizer, choices: Sequence[str]) -> list[list[int]]:
    """The first token of each choice, bare and after a space (both spellings count)."""
    out = []
    for choice in choices:
        ids = {tokenizer.encode(variant, add_special_tokens=False)[0] for variant in (choice, " " + choice)}
        out.append(sorted(ids))
    return out


def request_seed(seed: int, rendered: str) -> int:
    """A per-request sampling seed: the run's seed and the exact input, nothing else."""
    return int(stable_hash([int(seed), rendered], 15), 16)


_SAMPLER_CLASS = None


def make_seeded_sampler(seeds: Sequence[int], temperature: float, top_p: float, device: str):
    """A logits processor that samples each row from its own seeded generator.

    It leaves a single finite logit per row, so greedy decoding then picks the sampled
    token: temperature and nucleus filtering happen here, not in transformers' warpers.
    A row's draws depend only on its seed and its own logits, never on its batch mates.
    """
    global _SAMPLER_CLASS
    import torch

    if _SAMPLER_CLASS is None:
        from transformers import LogitsProcessor

        class SeededSampler(LogitsProcessor):
            def __init__(self, generators, temperature, top_p):
                self.generators = generators
                self.temperature = float(temperature)
                self.top_p = float(top_p)

            def __call__(self, input_ids, scores):
                logits = scores.float() / self.temperature
                if self.top_p < 1.0:
                    ordered, order = torch.sort(logits, dim=-1, descending=True)
                    cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
                    # Drop a token once the mass before it already reaches top_p; the top token always stays.
                    drop = (cumulative - torch.softmax(ordered, dim=-1)) >= self.top_p
                    drop[:, 0] = False
                    logits = logits.scatter(1, order, ordered.masked_fill(drop, float("-inf")))
                probs = torch.softmax(logits, dim=-1)
                chosen = torch.stack(
                    [torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(self.generators)]
                )
                out = torch.full_like(scores, float("-inf"))
                return out.scatter(1, chosen, 0.0)

        _SAMPLER_CLASS = SeededSampler
    generator_device = device if device.startswith("cuda") else "cpu"
    generators = []
    for seed in seeds:
        gen = torch.Generator(device=generator_device)
        gen.manual_seed(seed)
        generators.append(gen)
    return _SAMPLER_CLASS(generators, temperature, top_p)
