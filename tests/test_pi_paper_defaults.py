"""Persona inference as the paper ran it: every PI default pinned to the paper's value, and our
prompt compared with the paper's prompt files and scripts (read from its code where present)."""

from __future__ import annotations

import ast
import re
from typing import Sequence

import pytest
from paper_repo_support import paper_file

from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenRequest, GenResult
from persona_eval.persona_inference import defaults
from persona_eval.persona_inference.infer_file import InferConfig
from persona_eval.persona_inference.inference import PersonaInferrer, PersonaJob, pair_jobs
from persona_eval.persona_inference.prompt import BLOCK_TEMPLATE, INSTRUCTIONS, REASK_NOTES, PersonaPrompt, load_exemplars
from persona_eval.persona_inference.screening import normalize_persona
from persona_eval.storage.cache import NullCache

PAPER_PROMPTS = [f"persona_inference/prompts/persona_inference/{name}.txt" for name in ("BeaverTails", "Anthropic HHH", "Mnemonic", "SHP")]


class Recorder(Generator):
    def __init__(self, reply: str = "The user is a reader and prefers depth."):
        self.reply, self.seen = reply, []

    def identity(self):
        return {"backend": "recorder"}

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        self.seen.extend(requests)
        return [GenResult(text=self.reply) for _ in requests]


# ---- the values, pinned -----------------------------------------------------------------


def test_pi_defaults_are_the_papers():
    # prompts/persona_inference/*.txt: 5 exemplars each; scripts/example.sh and run_model.py:
    # max_tokens 200, min_tokens 5, temperature 0.0 (greedy); build_augmented_dataset.py: first line.
    assert defaults.K == 5 and len(load_exemplars()) == 5
    assert defaults.MAX_NEW_TOKENS == 200 and defaults.MIN_NEW_TOKENS == 5 and defaults.TEMPERATURE == 0.0
    assert defaults.STOP == ("\nPrompt:",)
    assert defaults.CUT == "line"
    assert defaults.MAX_RESPONSE_CHARS == 0  # whole responses, as the paper
    assert defaults.USE_PREFIX is False  # the model writes the whole persona, as the paper
    assert defaults.gen_params().to_dict() == {"max_new_tokens": 200, "min_new_tokens": 5, "temperature": 0.0,
                                               "top_p": 1.0, "seed": 0, "stop": ["\nPrompt:"]}


def test_every_entry_point_uses_the_defaults():
    from persona_eval.cli import _add_plugin_commands
    from persona_eval.cli import cli as group
    from persona_eval.plugins.personas.inferred import InferredPersonas

    if "infer" not in group.commands:
        _add_plugin_commands()
    options = {p.name: p.default for p in group.commands["infer"].params}
    assert (options["k"], options["max_new_tokens"], options["temperature"], options["max_response_chars"],
            options["cut"], options["use_prefix"]) == (5, 200, 0.0, 0, "line", False)
    config = InferConfig(model="x")
    assert (config.k, config.max_new_tokens, config.temperature, config.max_response_chars, config.cut, config.use_prefix) == (5, 200, 0.0, 0, "line", False)
    inferrer = PersonaInferrer(Recorder(), cache=NullCache())
    assert inferrer.params == defaults.gen_params() and inferrer.prompt.k == 5 and inferrer.cut == "line" and not inferrer.use_prefix
    assert inferrer.prompt.max_response_chars == 0
    source = InferredPersonas(model="hf:embedded")
    assert source.params == defaults.gen_params() and source.k == 5 and source.max_response_chars == 0
    assert (source.cut, source.use_prefix) == ("line", False)


def test_request_is_one_user_message_in_the_paper_layout():
    exemplars = load_exemplars()
    inferrer = PersonaInferrer(Recorder(), cache=NullCache())
    job = PersonaJob("q/chosen", "How do I fix a flat tyre?", "CHOSEN TEXT", "REJECTED TEXT")
    request = inferrer.request(job, 1)
    assert request.system is None and request.response_prefix == "" and not request.raw
    shots = [f"Prompt: {e.prompt}\n---\nChosen Response: {e.preferred}\n---\nRejected Response: {e.dispreferred}\n---\nPersona: {e.persona}"
             for e in exemplars]
    query = "Prompt: How do I fix a flat tyre?\n---\nChosen Response: CHOSEN TEXT\n---\nRejected Response: REJECTED TEXT\n---\nPersona:"
    assert request.prompt == "\n\n".join([INSTRUCTIONS, *shots, INSTRUCTIONS, query])
    # A re-ask samples, keeps the paper's length settings, and says what was wrong next to the query.
    again = inferrer.request(job, 2, "format")
    assert again.params.temperature == 0.7 and again.params.seed == 1
    assert (again.params.min_new_tokens, again.params.max_new_tokens, again.params.stop) == (5, 200, ("\nPrompt:",))
    assert again.prompt == "\n\n".join([INSTRUCTIONS, *shots, f"{INSTRUCTIONS} {REASK_NOTES['format']}", query])


def test_rejected_persona_sees_the_responses_swapped():
    chosen_job, rejected_job = pair_jobs("x", "P?", "GOOD", "BAD")
    prompt = PersonaPrompt(load_exemplars())
    assert prompt.render(chosen_job.prompt, chosen_job.preferred, chosen_job.other).endswith(
        "Prompt: P?\n---\nChosen Response: GOOD\n---\nRejected Response: BAD\n---\nPersona:")
    assert prompt.render(rejected_job.prompt, rejected_job.preferred, rejected_job.other).endswith(
        "Prompt: P?\n---\nChosen Response: BAD\n---\nRejected Response: GOOD\n---\nPersona:")


@pytest.mark.parametrize("raw", [
    "The user is thrifty and prefers free tools.",
    "The user is thrifty and prefers free tools. They also like lists.\n\nPrompt: How do I ...",
    "\n\n  The user is curious and prefers examples.  \nExplanation: the chosen response gives one.",
])
def test_the_cut_is_the_papers_first_line(raw):
    # model_loader.py returns the generated text .strip()ped; build_augmented_dataset.py keeps .split('\n')[0].strip().
    assert normalize_persona(raw) == raw.strip().split("\n")[0].strip()


def test_the_default_exemplars_are_our_own():
    text = "\n".join(paper_file(path) for path in PAPER_PROMPTS)
    for e in load_exemplars():
        for field in (e.prompt, e.preferred, e.dispreferred, e.persona):
            assert field not in text


# ---- compared with the paper's code ------------------------------------------------------


def _paper_block_template() -> str:
    source = paper_file("persona_inference/model/prompt_template_loader.py")
    body = source.split("class PersonaInference(Prompt):", 1)[1].split("class ", 1)[0]
    return ast.literal_eval(re.search(r"return f('.*')", body).group(1))


def test_our_block_is_the_papers():
    assert _paper_block_template().replace("{chosen}", "{preferred}").replace("{rejected}", "{other}") == BLOCK_TEMPLATE


@pytest.mark.parametrize("path", PAPER_PROMPTS)
def test_paper_prompt_files_hold_k_exemplars_between_two_copies_of_the_instructions(path):
    parts = paper_file(path).split("\n\n")
    # Instructions, the exemplars, instructions again, then the query is appended. (Mnemonic.txt's
    # second copy is the HHH file's wording, a slip in the paper's file; the layout is the same.)
    assert parts[-1] == ""
    assert all(p.startswith("You will be given a prompt and two responses") for p in (parts[0], parts[-2]))
    shots = parts[1:-2]
    assert len(shots) == defaults.K
    for shot in shots:
        assert re.fullmatch(r"Prompt: .*\n---\nChosen Response: .*\n---\nRejected Response: .*\n---\nPersona: The user is .+",
                            shot, re.DOTALL), shot[:200]


def test_our_prompt_is_the_papers_with_our_instructions_and_exemplars():
    """Put our instructions and exemplars into the paper's BeaverTails prompt file: our render is what comes out."""
    parts = paper_file(PAPER_PROMPTS[0]).split("\n\n")
    ours = [f"{BLOCK_TEMPLATE.format(prompt=e.prompt, preferred=e.preferred, other=e.dispreferred)} {e.persona}" for e in load_exemplars()]
    base_prompt = "\n\n".join([INSTRUCTIONS, *ours, INSTRUCTIONS, ""])
    assert len(parts) - 3 == len(ours)
    # prompt_template_loader.Prompt.create_prompt: base_prompt + create_inference_prompt(...)
    paper_way = base_prompt + _paper_block_template().format(prompt="Q?", chosen="C.", rejected="R.")
    assert PersonaPrompt(load_exemplars()).render("Q?", "C.", "R.") == paper_way


def _argparse_defaults(source: str) -> dict[str, object]:
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            name = ast.literal_eval(node.args[0])
            for kw in node.keywords:
                if kw.arg == "default":
                    try:
                        found[name] = ast.literal_eval(kw.value)
                    except ValueError:
                        pass
    return found


def test_decoding_settings_are_the_papers():
    run_defaults = _argparse_defaults(paper_file("persona_inference/model/run_model.py"))
    script = dict(re.findall(r"^(\w+)=(\S+)", paper_file("persona_inference/scripts/example.sh"), re.MULTILINE))
    assert run_defaults["--max_tokens"] == int(script["max_tokens"]) == defaults.MAX_NEW_TOKENS
    assert run_defaults["--min_tokens"] == int(script["min_tokens"]) == defaults.MIN_NEW_TOKENS
    assert run_defaults["--temperature"] == float(script["temperature"]) == defaults.TEMPERATURE
    # The script's stop is the shell string "\nPrompt:" (bash keeps the backslash, so on the APIs it
    # never matched); ours is the newline the script meant. Either way the first-line cut drops
    # everything after the first line, so the stop only saves tokens.
    assert script["stop_token"].strip('"').replace("\\n", "\n") == defaults.STOP[0]
    loader = paper_file("persona_inference/model/model_loader.py")
    assert "do_sample=False" in loader and "if self.temp == 0.0:" in loader  # temperature 0 is greedy decoding
    assert "min_new_tokens=self.min_length" in loader


def test_cut_and_swap_are_the_papers():
    augmented = paper_file("persona_inference/model/build_augmented_dataset.py")
    assert augmented.count("['raw_text'].split('\\n')[0].strip()") == 2  # chosen and rejected: the first line
    loader = paper_file("persona_inference/model/prompt_data_loader.py")
    # Chosen personas for every pair, then rejected ones with the two responses swapped.
    assert "all_prompts, all_r1, all_r2 = prompts + prompts, r1 + r2, r2 + r1" in loader
