"""What the built-in retrievers share: `IndexedRetriever`, `top_k` and model loading.

`IndexedRetriever` is the shape of all three: `search` and `search_many` over a `score_matrix`,
and an index that `save_index` / `load_index` keep in a folder, which lets
`persona_eval.storage.index_cache` cache it. `top_k` breaks ties by index, so the same index and
query always give the same order. `load_sentence_transformer` tries a local folder, the local
Hugging Face cache, then (unless ``HF_HUB_OFFLINE``) the hub, with one clear error. numpy is a
`LazyModule`, because `persona-eval --help` imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from persona_eval.contracts.interfaces import Retriever
from persona_eval.errors import RunError, UsageError
from persona_eval.lazy_import import LazyModule

np = LazyModule("numpy")  # imported on first use: `persona-eval --help` imports this module


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (index, score) pairs, best first; equal scores go to the lower index."""
    scores = np.asarray(scores, dtype=np.float64)
    k = max(0, min(int(k), scores.shape[0]))
    # lexsort sorts by the last key first: descending score, then ascending index.
    order = np.lexsort((np.arange(scores.shape[0]), -scores))[:k]
    return [(int(i), float(scores[i])) for i in order]


class IndexedRetriever(Retriever):
    """Shared shape of the built-in retrievers: batch search and a savable index."""

    name = "retriever"

    def __init__(self) -> None:
        self._size: int | None = None

    @property
    def size(self) -> int:
        if self._size is None:
            raise RunError(f"the {self.name} retriever has no index yet: call index() first")
        return self._size

    def search(self, query: str, k: int = 1) -> list[tuple[int, float]]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 1) -> list[list[tuple[int, float]]]:
        matrix = self.score_matrix(list(queries))
        return [top_k(row, k) for row in matrix]

    def score_matrix(self, queries: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def save_index(self, folder: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_index(self, folder: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def load_sentence_transformer(factory, name_or_path: str, *, what: str, option: str, **kwargs):
    """Load a local folder, then the local HF cache, then (unless offline) the hub; one clear error otherwise."""
    local = Path(os.path.expanduser(name_or_path))
    if local.exists():
        attempts = [(str(local), {})]
    else:
        attempts = [(name_or_path, {"local_files_only": True})]
        if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes"):
            attempts.append((name_or_path, {}))
    last: Exception | None = None
    for target, extra in attempts:
        try:
            return factory(target, **kwargs, **extra)
        except Exception as exc:  # noqa: BLE001 - hub, cache and format errors all mean "not available"
            last = exc
    first_line = str(last).strip().splitlines()[0] if last and str(last).strip() else type(last).__name__
    raise UsageError(
        f"{what} {name_or_path!r} is not available ({type(last).__name__}: {first_line}); "
        f"it must be a local folder, in the local Hugging Face cache, or reachable on the hub "
        f"(pass {option}=/path/to/model to use a local copy)"
    ) from last
