"""The interfaces plugins implement: Generator, Judge, PersonaSource, Retriever.

All are batch-first. `identity()` returns a JSON-able dict that names everything that
changes outputs (backend, model, revision or file hash, adapter, parameters, prompt
hashes); it goes into cache keys and into results, so two different models can never
share a cache entry.
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

from persona_eval.contracts.records import Example, GenRequest, GenResult, PairRequest, Persona, Verdict

__all__ = ['Generator', 'Judge', 'PersonaSource', 'Retriever']


class Generator(abc.ABC):
    """Produces text for a batch of requests."""

    #: How many requests the generate stage hands over at once (progress granularity).
    preferred_batch_size: int = 8

    #: How many `generate` calls may run at once from different threads (after a first call
    #: has run alone). Network backends whose calls share one connection pool set 2 or more,
    #: so the next batch starts while the last requests of the previous one finish.
    max_concurrent_calls: int = 1

    #: Whether ``--executor ray`` sends this backend's work to cluster workers (each building its
    #: own copy from the spec). False where the work happens elsewhere (an API endpoint fills
    #: itself through concurrency) or needs the run folder (imported outputs): it stays in the driver.
    distributable: bool = True

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]: ...

    def choice_probs(self, requests: Sequence[GenRequest], choices: Sequence[str]) -> list[dict[str, float]] | None:
        """Probability of each choice as the next token after prompt + response_prefix.

        Backends without log-probabilities return None.
        """
        return None

    def context_length(self) -> int | None:
        """The most tokens (input and output together) the model takes, where known without loading it.

        None (the default): unknown, and the harness checks no context length. Where known, a
        rendered input that cannot fit is an error naming the item before generation starts.
        """
        return None

    def render_input(self, request: GenRequest) -> str | None:
        """The model's input for `request` exactly as this backend sends it (chat formatting included).

        For `persona-eval show-prompt`: must load no weights (a tokenizer is fine). None (the
        default): unknown, and show-prompt shows the request's own text instead.
        """
        return None

    #: True where the backend completes a raw string (hf, vllm): a `GenRequest` with
    #: ``raw=True`` then reaches the model byte for byte, with no chat template. Chat-only
    #: endpoints (openai) leave it False and get system + user messages instead.
    accepts_raw_prompt: bool = False

    def bind_run_dir(self, path) -> None:
        """Called by every stage with the folder it writes, before any `generate` call.

        A backend that keeps state which must outlive the process (the ids of submitted
        OpenAI batch jobs, so a killed run re-attaches instead of paying twice) keeps it
        there. The default keeps nothing.
        """

    def close(self) -> None:
        """Release resources (servers, GPU memory)."""


class Judge(abc.ABC):
    """Compares two responses for one criterion, one order at a time."""

    preferred_batch_size: int = 8

    #: How many `compare` calls may run at once from different threads (see Generator).
    max_concurrent_calls: int = 1

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def compare(self, requests: Sequence[PairRequest]) -> list[Verdict]: ...


class PersonaSource(abc.ABC):
    @abc.abstractmethod
    def identity(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def personas(self, examples: Sequence[Example], split: str) -> list[Persona]: ...


class Retriever(abc.ABC):
    @abc.abstractmethod
    def identity(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def index(self, texts: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def search(self, query: str, k: int = 1) -> list[tuple[int, float]]:
        """Indices into the indexed texts with their scores, best first."""
