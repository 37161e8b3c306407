"""The `retrieved` persona source: the persona of the most similar training prompt.

What a deployed system has (the paper's "retrieved" setting). The training partition's prompts
are indexed by the task's ``retrieval`` retriever or ``--retriever NAME[,key=value...]`` (cached
by `persona_eval.storage.index_cache`); for each test prompt the best usable of the top-k hits
gives the persona on the split's side (its chosen persona for ``chosen``, rejected for ``rejected``).
Leak-freedom: a hit with the test item's id, or the same prompt once normalised
(`common.normalize_prompt`), or no persona on that side, is skipped and listed in the provenance,
which also names the training item, its prompt, the score, its rank and the retriever's identity.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from persona_eval.contracts import registry
from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import PersonaSource
from persona_eval.contracts.records import Example, Persona
from persona_eval.errors import RunError, UsageError
from persona_eval.hashing import stable_hash
from persona_eval.plugins.personas.common import normalize_prompt

logger = logging.getLogger(__name__)


TRAIN_PARTITION = "train"


def parse_retriever_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"bm25,k1=1.2,stemmer=none"`` -> ``("bm25", {"k1": 1.2, "stemmer": None})``."""
    from persona_eval.contracts.model_spec import _coerce

    name, *pairs = str(text).split(",")
    name = name.strip()
    if not name:
        raise UsageError(f"--retriever {text!r}: expected NAME[,key=value...], e.g. bm25 or dense,model=PATH")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--retriever {text!r}: option {pair!r} is not key=value")
        options[key.strip()] = _coerce(value.strip())
    return name, options


class RetrievedPersonas(PersonaSource):
    def __init__(self, task, retriever: str | None = None, k: int | None = None, retriever_options: dict[str, Any] | None = None):
        if task is None:
            raise UsageError("the retrieved persona source needs a task")
        if not task.has_partition(TRAIN_PARTITION):
            raise UsageError(
                f"the retrieved persona source needs training data to retrieve from, but task {task.name!r} "
                f"sets no dataset.{TRAIN_PARTITION}",
                where=str(task.path),
            )
        spec = task.spec.retrieval
        task_name, task_inline = parse_retriever_spec(spec.retriever)
        name, inline = parse_retriever_spec(retriever) if retriever else (task_name, {})
        entry = registry.retrievers.entry(name)
        # The task's retrieval options belong to the task's retriever; another one starts clean.
        same_as_task = name == task_name or entry.name == task_name
        base = {**spec.options, **task_inline} if same_as_task else {}
        self.retriever_name = entry.name
        self.retriever_options = {**base, **inline, **(retriever_options or {})}
        self.k = spec.k if k is None else k
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= 100:
            raise UsageError(f"retrieved persona source: k must be an integer from 1 to 100, got {self.k!r}")
        self.task = task
        self.retriever = registry.retrievers.create(self.retriever_name, **self.retriever_options)
        self._train: list[Example] | None = None
        self._indexed = False
        self.index_info: dict[str, Any] = {}

    # -- training data and its index ---------------------------------------------------------

    @property
    def train(self) -> list[Example]:
        if self._train is None:
            self._train = self.task.load(TRAIN_PARTITION)
        return self._train

    def train_hash(self) -> str:
        return stable_hash([[e.id, e.prompt, e.chosen_persona, e.rejected_persona] for e in self.train], 16)

    def identity(self) -> dict[str, Any]:
        return {
            "source": "retrieved",
            "retriever": self.retriever.identity(),
            "k": self.k,
            "partition": TRAIN_PARTITION,
            "train_items": len(self.train),
            "train_hash": self.train_hash(),
        }

    def ensure_index(self) -> dict[str, Any]:
        if not self._indexed:
            from persona_eval.storage.index_cache import load_or_build_index

            self.index_info = load_or_build_index(
                self.retriever, [e.prompt for e in self.train],
                describe={"task": self.task.name, "partition": TRAIN_PARTITION, "task_data_hash": self.task.data_hash},
            )
            logger.info("retrieval index (%s): %s", self.retriever_name, self.index_info)
            self._indexed = True
        return self.index_info

    def _search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        many = getattr(self.retriever, "search_many", None)
        if callable(many):
            return many(queries, k)
        return [self.retriever.search(q, k) for q in queries]

    # -- personas ------------------------------------------------------------------------------

    def personas(self, examples: Sequence[Example], split: str) -> list[Persona]:
        if split not in ("chosen", "rejected"):
            raise UsageError(f"unknown split {split!r}: use chosen or rejected")
        train = self.train
        self.ensure_index()
        by_prompt: dict[str, list[int]] = {}
        by_id: dict[str, int] = {}
        for i, item in enumerate(train):
            by_prompt.setdefault(normalize_prompt(item.prompt), []).append(i)
            by_id[item.id] = i
        no_persona = {i for i, item in enumerate(train) if not item.persona_for(split).strip()}

        # Per test item, the training items that would leak it (itself, or its prompt again).
        leaks: list[dict[int, str]] = []
        for example in examples:
            reasons = {i: "same prompt as the test item" for i in by_prompt.get(normalize_prompt(example.prompt), ())}
            if example.id in by_id:
                reasons[by_id[example.id]] = "the test item itself (same id)"
            leaks.append(reasons)

        # Ask for enough hits that k usable ones remain after dropping every excluded item.
        depth = min(len(train), self.k + len(no_persona) + max((len(r) for r in leaks), default=0))
        results = self._search([e.prompt for e in examples], depth)
        identity = self.retriever.identity()
        out: list[Persona] = []
        for example, reasons, hits in zip(examples, leaks, results):
            usable, skipped = [], []
            for rank, (index, score) in enumerate(hits, start=1):
                if not 0 <= index < len(train):
                    raise RunError(f"retriever {self.retriever_name!r} returned index {index} for {len(train)} training items")
                reason = reasons.get(index) or (f"no {split} persona" if index in no_persona else None)
                if reason:
                    if not usable:
                        skipped.append({"train_id": train[index].id, "rank": rank, "score": score, "reason": reason})
                    continue
                usable.append((rank, index, score))
                if len(usable) == self.k:
                    break
            if not usable:
                raise UsageError(
                    f"item {example.id!r}: no training item to take a {split} persona from "
                    f"({len(train)} in the index; the item itself, exact duplicates of its prompt and items "
                    f"without a {split} persona are never used)"
                )
            rank, index, score = usable[0]
            best = train[index]
            out.append(Persona(
                text=best.persona_for(split).strip(),
                source="retrieved",
                provenance={
                    "train_id": best.id,
                    "train_prompt": best.prompt,
                    "score": score,
                    "rank": rank,
                    "side": split,
                    "k": self.k,
                    "retriever": identity,
                    "candidates": [{"train_id": train[i].id, "rank": r, "score": s} for r, i, s in usable],
                    "skipped": skipped,
                },
            ))
        return out


@hookimpl
def register_persona_sources(register):
    register("retrieved", RetrievedPersonas, aliases=["retrieval"],
             description="the persona of the most similar training prompt (leak-free)")
