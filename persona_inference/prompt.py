"""The few-shot persona-inference (PI) prompt: instructions, exemplars, pair block, and its hash.

For a preference pair (prompt, chosen, rejected) the *chosen persona* explains why a user would
prefer the chosen response; the *rejected persona* is the same question with the responses
swapped. The layout is the paper's (``persona_inference/prompts/persona_inference/*.txt`` and
``PersonaInference`` in ``model/prompt_template_loader.py``): one user message holding the
instructions, the exemplars, the instructions again and the query pair, each pair as
``Prompt: ...\n---\nChosen Response: ...\n---\nRejected Response: ...\n---\nPersona:``. The
instructions and exemplars are our own wording; exemplars come from a YAML or JSONL file
(`load_exemplars`, default ``data/pi_exemplars.yaml``), each persona checked against the persona
format. `PersonaPrompt.identity` and `hash` cover the instructions, the template, the re-ask
notes and the exemplars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import UsageError
from persona_eval.hashing import stable_hash
from persona_eval.persona_inference import defaults
from persona_eval.persona_inference.screening import format_problem

DEFAULT_EXEMPLARS = Path(__file__).resolve().parent / "data" / "pi_exemplars.yaml"


INSTRUCTIONS = (
    "Below are a prompt and two responses to it that a user compared side by side: the user picked one "
    "(Chosen Response) and passed over the other (Rejected Response). The prompt is what the user asked or "
    "requested; the responses are what an assistant answered. Describe the user behind that choice in a "
    "persona: one very short, specific sentence of the form \"The user is [attribute] and prefers "
    "[explanation]\" that gives the reason the user picked the Chosen Response and not the Rejected Response. "
    "Describe high-level traits one can infer about the user, such as information needs, interests, "
    "expertise, situation and personality, without repeating details, words or phrasing of the prompt or "
    "the responses. Never mention race, ethnicity, religion, gender, age, nationality, sexual orientation, "
    "disability or any other protected attribute."
)
# Kept for callers that sent the instructions as a system message: the paper's layout has none.
SYSTEM_PROMPT: str | None = None


# The paper's pair block, labels included (model/prompt_template_loader.py, PersonaInference).
BLOCK_TEMPLATE = "Prompt: {prompt}\n---\nChosen Response: {preferred}\n---\nRejected Response: {other}\n---\nPersona:"
# The paper's prompt files separate their parts with a blank line (Prompt(delim="\n\n")).
PART_SEPARATOR = "\n\n"


REASK_NOTES = {
    "format": "Answer with exactly one sentence that starts with \"The user is\" and contains \"and prefers\".",
    "protected": (
        "Do not mention race, ethnicity, religion, gender, age, nationality, sexual orientation, "
        "disability or other protected attributes; describe needs, interests and personality instead."
    ),
}


@dataclass(frozen=True)
class Exemplar:
    prompt: str
    preferred: str
    dispreferred: str
    persona: str


_EXEMPLAR_KEYS = {"prompt": ("prompt",), "preferred": ("preferred", "chosen"), "dispreferred": ("dispreferred", "rejected", "other"), "persona": ("persona", "chosen_persona")}


def _exemplar_from(record: Any, where: str) -> Exemplar:
    if not isinstance(record, dict):
        raise UsageError("an exemplar must be a mapping with prompt, preferred, dispreferred and persona", where=where)
    values = {}
    for name, keys in _EXEMPLAR_KEYS.items():
        key = next((k for k in keys if k in record), None)
        if key is None:
            raise UsageError(f"exemplar is missing {name!r} (accepted keys: {', '.join(keys)})", where=where)
        value = record[key]
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"exemplar field {key!r} must be non-empty text", where=where)
        values[name] = " ".join(value.split()) if name == "persona" else value.strip()
    problem = format_problem(values["persona"])
    if problem:
        raise UsageError(f"exemplar persona {values['persona']!r} does not follow the persona format: {problem}", where=where)
    return Exemplar(**values)


def load_exemplars(path: str | os.PathLike | None = None) -> list[Exemplar]:
    """Exemplars from a YAML file (a list, or a mapping with `exemplars:`) or JSON Lines."""
    import yaml

    path = Path(path) if path else DEFAULT_EXEMPLARS
    if not path.is_file():
        raise UsageError("exemplars file not found", where=str(path))
    if path.suffix.lower() == ".jsonl":
        from persona_eval.storage.jsonl import iter_jsonl

        with open(path, "rb") as handle:
            numbers = [i for i, line in enumerate(handle, start=1) if line.strip()]
        exemplars = [_exemplar_from(r, f"{path}:{n}") for n, r in zip(numbers, iter_jsonl(path))]
    else:
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text)
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except UnicodeDecodeError as exc:
            raise UsageError(f"not UTF-8 text ({exc.reason})", where=str(path)) from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise UsageError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", where=f"{path}:{mark.line + 1}" if mark else str(path)) from exc
        items_node = root
        if isinstance(data, dict):
            data = data.get("exemplars")
            items_node = next((v for k, v in root.value if getattr(k, "value", None) == "exemplars"), None)
        if not isinstance(data, list):
            raise UsageError("expected a list of exemplars (or a mapping with an 'exemplars' list)", where=f"{path}:1")
        exemplars = []
        for index, record in enumerate(data):
            line = items_node.value[index].start_mark.line + 1 if items_node is not None else index + 1
            exemplars.append(_exemplar_from(record, f"{path}:{line}"))
    if not exemplars:
        raise UsageError("the exemplars file holds no exemplars", where=str(path))
    return exemplars


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    if limit and len(text) > limit:
        return text[:limit].rstrip() + " [...]"
    return text


class PersonaPrompt:
    """Renders the few-shot PI prompt in the paper's layout: instructions, k exemplars, the
    instructions again, then the query pair (one user message, no system prompt)."""

    def __init__(self, exemplars: Sequence[Exemplar], k: int = defaults.K, max_response_chars: int = defaults.MAX_RESPONSE_CHARS):
        if k < 0:
            raise UsageError("--k must be zero or positive")
        if k > len(exemplars):
            raise UsageError(f"--k {k} asks for more exemplars than the file holds ({len(exemplars)})")
        self.exemplars = list(exemplars)
        self.k = k
        self.max_response_chars = max_response_chars

    def shots(self, prompt: str) -> list[Exemplar]:
        # The same fixed exemplars for every query (a shared prefix batches and caches well),
        # except one whose prompt is the query itself: it would hand the model the answer.
        key = prompt.strip()
        return [e for e in self.exemplars if e.prompt.strip() != key][: self.k]

    def block(self, prompt: str, preferred: str, other: str) -> str:
        clip = self.max_response_chars
        return BLOCK_TEMPLATE.format(prompt=_clip(prompt, clip * 2), preferred=_clip(preferred, clip), other=_clip(other, clip))

    def render(self, prompt: str, preferred: str, other: str, note: str = "") -> str:
        shots = [f"{self.block(e.prompt, e.preferred, e.dispreferred)} {e.persona}" for e in self.shots(prompt)]
        # A re-ask's note goes with the instructions next to the query, where the model reads it last.
        closing = f"{INSTRUCTIONS} {note}" if note else INSTRUCTIONS
        head = [INSTRUCTIONS, *shots] if shots else []
        return PART_SEPARATOR.join([*head, closing, self.block(prompt, preferred, other)])

    def identity(self) -> dict[str, Any]:
        return {
            "instructions": stable_hash(INSTRUCTIONS, 16),
            "template": stable_hash([BLOCK_TEMPLATE, PART_SEPARATOR, "paper-layout", REASK_NOTES], 16),
            "exemplars": stable_hash([e.__dict__ for e in self.exemplars[: self.k + 1]], 16),
            "k": self.k,
            "max_response_chars": self.max_response_chars,
        }

    def hash(self) -> str:
        return stable_hash(self.identity(), 16)
