"""Building SFT and DPO datasets from a task's train split, rendered exactly as evaluation renders.

The model input of every row is made by the evaluation path itself: the task's prompt
template through `persona_eval.rendering.prompts.render_input`, wrapped in a `GenRequest` the way
the generate stage builds one (task system prompt and response prefix), then through the chat
template with `persona_eval.rendering.chat.render_request`, the function the `hf` generator
calls. So a model trained here sees, token for token, what `persona-eval run` feeds it.

Persona modes:

- ``chosen``: strategy ``pt`` with the chosen persona P_C; SFT target r_C, DPO r_C over r_R.
  This is PT_sft / PT_dpo.
- ``none``: strategy ``baseline`` (the prompt alone); SFT target r_C, DPO r_C over r_R.
  This is the standard DPO baseline that never sees a persona.
- ``all``: every item twice: as in ``chosen``, and with the rejected persona P_R and the
  preference reversed (SFT target r_R; DPO r_R over r_C). P_R was inferred as the user who
  prefers r_R, so this teaches the model to serve minority users too. Both copies of an item
  stay on the same side of the train/eval split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from persona_eval.contracts.records import Example, GenRequest
from persona_eval.errors import RunError, UsageError
from persona_eval.hashing import stable_hash
from persona_eval.rendering.prompts import render_input, render_response_prefix

PersonaMode = Literal["chosen", "none", "all"]
PERSONA_MODES = ("chosen", "none", "all")
KINDS = ("sft", "dpo")


@dataclass
class TrainingData:
    kind: str
    persona_mode: str
    train: list[dict[str, str]]
    eval: list[dict[str, str]]
    train_ids: list[str] = field(default_factory=list)
    eval_ids: list[str] = field(default_factory=list)
    items: int = 0

    @property
    def data_hash(self) -> str:
        """Hash of the exact rows trained and evaluated on (text after rendering)."""
        return stable_hash({"train": self.train, "eval": self.eval}, 16)

    def datasets(self):
        from datasets import Dataset

        train = Dataset.from_list(self.train)
        evaluation = Dataset.from_list(self.eval) if self.eval else None
        return train, evaluation


def eval_request(task, example: Example, strategy: str, persona: str) -> GenRequest:
    """The request `persona-eval run` makes for this example (generation params aside)."""
    spec = task.spec
    prompt = render_input(spec.prompts, strategy, example, persona)
    prefix = render_response_prefix(spec.response_prefix, example, persona)
    return GenRequest(id=example.id, prompt=prompt, system=spec.system_prompt, response_prefix=prefix)


def eval_token_ids(tokenizer, text: str, has_specials: bool) -> list[int]:
    """Token ids of a rendered input exactly as the `hf` generator encodes it."""
    return tokenizer(text, add_special_tokens=not has_specials)["input_ids"]


def trl_prompt(tokenizer, text: str, has_specials: bool) -> str:
    """The prompt string that TRL's tokenization (``tokenizer(text)``) turns into the eval ids.

    TRL tokenizes plain-text prompts with the tokenizer's default special tokens. When the
    chat template already wrote a BOS token into the text, a tokenizer that adds BOS would
    double it, so that one leading BOS string is dropped and the tokenizer puts it back.
    """
    wanted = eval_token_ids(tokenizer, text, has_specials)
    if tokenizer(text)["input_ids"] == wanted:
        return text
    bos = tokenizer.bos_token
    if has_specials and bos and text.startswith(bos) and tokenizer(text[len(bos):])["input_ids"] == wanted:
        return text[len(bos):]
    raise RunError(
        "cannot make TRL's tokenization of the prompt match the evaluation's for this tokenizer "
        f"({type(tokenizer).__name__}); set chat_template: false in the training config or use another tokenizer"
    )


def _variants(example: Example, persona_mode: str) -> list[tuple[str, str, str, str, str]]:
    """(variant, strategy, persona, preferred response, other response) for one item."""
    if persona_mode == "none":
        return [("chosen", "baseline", "", example.chosen, example.rejected)]
    out = [("chosen", "pt", example.chosen_persona, example.chosen, example.rejected)]
    if persona_mode == "all":
        out.append(("rejected", "pt", example.rejected_persona, example.rejected, example.chosen))
    return out


def _check(example: Example, kind: str, persona_mode: str, where: str) -> None:
    needed = {"chosen": "chosen response"}
    if kind == "dpo" or persona_mode == "all":
        needed["rejected"] = "rejected response"
    if persona_mode in ("chosen", "all"):
        needed["chosen_persona"] = "chosen persona"
    if persona_mode == "all":
        needed["rejected_persona"] = "rejected persona"
    for attr, label in needed.items():
        if not getattr(example, attr).strip():
            raise UsageError(f"item {example.id!r} has an empty {label}, which --persona {persona_mode} {kind} needs", where=where)


def split_items(examples: Sequence[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out a seeded random share of items for per-epoch evaluation (at least one, if any)."""
    if eval_fraction <= 0 or len(examples) < 2:
        return list(examples), []
    count = min(len(examples) - 1, max(1, round(len(examples) * eval_fraction)))
    held = set(random.Random(f"persona-eval-train:{seed}").sample(range(len(examples)), count))
    train = [e for i, e in enumerate(examples) if i not in held]
    evaluation = [e for i, e in enumerate(examples) if i in held]
    return train, evaluation


def build_training_data(
    task,
    kind: str,
    persona_mode: str,
    tokenizer,
    *,
    use_chat_template: bool = True,
    limit: int | None = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
) -> TrainingData:
    """Rows for TRL: ``prompt``/``completion`` (SFT) or ``prompt``/``chosen``/``rejected`` (DPO)."""
    from persona_eval.rendering.chat import render_request

    if kind not in KINDS:
        raise UsageError(f"unknown training kind {kind!r}; use one of: {', '.join(KINDS)}")
    if persona_mode not in PERSONA_MODES:
        raise UsageError(f"--persona {persona_mode!r}: use one of: {', '.join(PERSONA_MODES)}")
    examples = task.load("train")
    if limit is not None and limit > 0:
        examples = examples[:limit]
    where = str(task.data_path("train") or task.path)
    for example in examples:
        _check(example, kind, persona_mode, where)
    train_items, eval_items = split_items(examples, eval_fraction, seed)

    def rows(items: Sequence[Example]) -> tuple[list[dict[str, str]], list[str]]:
        out, ids = [], []
        for example in items:
            for variant, strategy, persona, preferred, other in _variants(example, persona_mode):
                request = eval_request(task, example, strategy, persona)
                text, has_specials = render_request(tokenizer, request, use_chat_template)
                prompt = trl_prompt(tokenizer, text, has_specials)
                if kind == "sft":
                    out.append({"prompt": prompt, "completion": preferred.strip()})
                else:
                    out.append({"prompt": prompt, "chosen": preferred.strip(), "rejected": other.strip()})
                ids.append(f"{example.id}:{variant}")
        return out, ids

    train_rows, train_ids = rows(train_items)
    eval_rows, eval_ids = rows(eval_items)
    return TrainingData(kind, persona_mode, train_rows, eval_rows, train_ids, eval_ids, items=len(examples))


def summary(data: TrainingData) -> dict[str, Any]:
    return {
        "items": data.items,
        "train_rows": len(data.train),
        "eval_rows": len(data.eval),
        "eval_items": sorted({i.rsplit(":", 1)[0] for i in data.eval_ids}),
        "rows_hash": data.data_hash,
    }
