"""Persona-inference (PI) defaults, set to what the paper's persona inference ran with.

One place for the numbers that `infer`, `PersonaInferrer` and the `inferred` persona source
share, each next to where the paper has it (Pinafore/alignment-personalization,
``persona_inference/``). Where ours departs on purpose, the comment says why; docs/fidelity.md
lists them and the tests in ``tests/test_pi_paper_defaults.py`` pin them.
"""

from __future__ import annotations

from persona_eval.contracts.records import GenParams

# Each of the paper's prompt files (prompts/persona_inference/*.txt) holds 5 exemplars; our
# default exemplar file holds 5 too, and all of them are shown.
K = 5
# run_model.py / scripts/example.sh: --max_tokens 200, --min_tokens 5, --temperature 0.0
# (greedy: do_sample=False in model_loader.py), --stop_token "\nPrompt:" (API models).
MAX_NEW_TOKENS = 200
MIN_NEW_TOKENS = 5
TEMPERATURE = 0.0
STOP = ("\nPrompt:",)
# The paper puts whole responses into the prompt; 0 means never clip.
MAX_RESPONSE_CHARS = 0
# build_augmented_dataset.py keeps raw_text.split('\n')[0].strip(): the first line.
CUT = "line"
CUTS = ("line", "sentence")
# The paper lets the model write the whole persona after "Persona:"; forcing the reply to
# begin with "The user is" is an opt-in for small models that drift from the format.
USE_PREFIX = False
# Departure: the paper keeps every first answer. We re-ask an answer that fails the format or
# protected-attribute screen (up to 3 asks, then drop it), because the persona is later shown
# to the tested model as a description of the user. The first ask is the paper's request.
MAX_ATTEMPTS = 3


def gen_params(max_new_tokens: int = MAX_NEW_TOKENS, temperature: float = TEMPERATURE, seed: int = 0) -> GenParams:
    """The first ask's decoding settings (the paper's, unless a caller overrides a number)."""
    return GenParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, stop=STOP,
                     min_new_tokens=min(MIN_NEW_TOKENS, max_new_tokens))
