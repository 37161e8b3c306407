"""The `colbert` retriever: ColBERT late interaction (MaxSim) through PyLate.

PyLate is the optional extra ``pip install 'persona-eval[colbert]'``, which resolves to
sentence-transformers 5.3, transformers <= 5.3 and torch 2.11; colbert-ai is detected and
reported, not used (why: the version notes below). Options: ``checkpoint`` (colbert-ir/colbertv2.0
from the Hugging Face hub, or a local folder; offline, pass ``checkpoint=/local/folder``),
``revision``, ``device``, ``batch_size``. A document scores the sum over query tokens of its best
token match; the saved index is every document's token embeddings and their offsets.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import RunError, UsageError
from persona_eval.plugins.retrievers.common import IndexedRetriever, _version, load_sentence_transformer, np

# Version notes (from the packages' metadata, June 2026):
# - pylate 1.6.0 pins sentence-transformers==5.3.0 and transformers>=4.41,<=5.3.0 and needs
#   fast-plaid (1.4.6.2110 pins torch==2.11.0); with sentence-transformers 6.x it fails while
#   converting the checkpoint (KeyError: 'activation_function' in Dense.from_sentence_transformers).
#   So the colbert extra resolves to sentence-transformers 5.3, transformers <= 5.3, torch 2.11.
# - colbert-ai (0.2.22 is the latest) does not load with transformers >= 5, which persona-eval
#   needs: its BertPreTrainedModel subclass never calls post_init ("'...' object has no attribute
#   'all_tied_weights_keys'", the same break as AnswerDotAI/rerankers#77); it also compiles a C++
#   extension at import. So it is detected and reported, not used.
# - The checkpoint colbert-ir/colbertv2.0 comes from the Hugging Face hub; PyLate converts it on
#   load (lightonai/colbertv2.0 is the same weights in PyLate's format).

DEFAULT_COLBERT_CHECKPOINT = "colbert-ir/colbertv2.0"


class ColBERTRetriever(IndexedRetriever):
    """ColBERT late interaction: the sum over query tokens of the best document-token match."""

    name = "colbert"

    def __init__(self, checkpoint: str = DEFAULT_COLBERT_CHECKPOINT, revision: str | None = None, device: str = "cpu", batch_size: int = 32):
        super().__init__()
        if importlib.util.find_spec("pylate") is None:
            if importlib.util.find_spec("colbert") is not None:
                raise UsageError(
                    f"the colbert retriever runs on PyLate; colbert-ai {_version('colbert-ai') or ''} is installed but does not "
                    "load with transformers>=5, which persona-eval needs: pip install 'persona-eval[colbert]'"
                )
            raise UsageError(
                "the colbert retriever needs PyLate: pip install 'persona-eval[colbert]' (pylate 1.6 pins "
                "sentence-transformers==5.3.0 and transformers<=5.3.0); or use --retriever dense or bm25"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"colbert retriever: batch_size must be a positive integer, got {batch_size!r}")
        self.checkpoint = str(checkpoint)
        self.revision = revision
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._tokens: np.ndarray | None = None
        self._offsets: np.ndarray | None = None

    def identity(self) -> dict[str, Any]:
        local = Path(os.path.expanduser(self.checkpoint))
        if local.exists():
            from persona_eval.models.fingerprint import weights_fingerprint

            revision = f"sha256:{weights_fingerprint(local)}"
        else:
            revision = self.revision or "main"
        return {
            "name": "colbert",
            "backend": f"pylate=={_version('pylate')}",
            "checkpoint": self.checkpoint,
            "revision": revision,
            "similarity": "maxsim",
        }

    def _load(self):
        if self._model is None:
            try:
                from pylate import models
            except Exception as exc:  # noqa: BLE001 - a broken install is the user's to fix
                raise UsageError(
                    f"PyLate is installed but does not import ({type(exc).__name__}: {exc}); "
                    f"it pins sentence-transformers==5.3.0 (found {_version('sentence-transformers')}) and "
                    f"transformers<=5.3.0 (found {_version('transformers')})"
                ) from exc
            kwargs: dict[str, Any] = {"device": self.device}
            if self.revision:
                kwargs["revision"] = self.revision
            self._model = load_sentence_transformer(
                lambda target, **kw: models.ColBERT(model_name_or_path=target, **kw),
                self.checkpoint, what="ColBERT checkpoint", option="--retriever colbert,checkpoint", **kwargs,
            )
        return self._model

    def _encode(self, texts: Sequence[str], *, is_query: bool) -> list[np.ndarray]:
        model = self._load()
        encoded = model.encode(list(texts), batch_size=self.batch_size, is_query=is_query, show_progress_bar=False)
        return [np.asarray(getattr(e, "cpu", lambda: e)(), dtype=np.float32) for e in encoded]

    def index(self, texts: Sequence[str]) -> None:
        docs = self._encode(texts, is_query=False) if texts else []
        lengths = [d.shape[0] for d in docs]
        self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._tokens = np.concatenate(docs).astype(np.float32) if docs else np.zeros((0, 0), dtype=np.float32)
        self._size = len(texts)

    def score_matrix(self, queries: list[str]) -> np.ndarray:
        if self._tokens is None or self._offsets is None:
            raise RunError("the colbert retriever has no index yet: call index() first")
        rows = np.zeros((len(queries), self.size), dtype=np.float32)
        if self.size == 0:
            return rows
        starts = self._offsets[:-1]
        for row, query in enumerate(self._encode(queries, is_query=True)):
            sims = query @ self._tokens.T  # (query tokens, all document tokens)
            rows[row] = np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)
        return rows

    def save_index(self, folder: Path) -> None:
        np.save(folder / "token_embeddings.npy", self._tokens, allow_pickle=False)
        np.save(folder / "offsets.npy", self._offsets, allow_pickle=False)

    def load_index(self, folder: Path) -> None:
        self._tokens = np.load(folder / "token_embeddings.npy", allow_pickle=False)
        self._offsets = np.load(folder / "offsets.npy", allow_pickle=False)
        self._size = len(self._offsets) - 1
