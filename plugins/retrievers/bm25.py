"""The `bm25` retriever: Okapi BM25 through ``bm25s`` (numpy only).

Texts become lower-cased word tokens, stop words removed, optionally stemmed. Options: ``k1``
(1.5), ``b`` (0.75, within [0, 1]), ``method`` (lucene; or robertson, atire, bm25l, bm25+),
``stopwords`` (en, or none), ``stemmer`` (english via PyStemmer, or none). Query words the index
never saw are left out, so a query sharing no word scores 0 everywhere. The saved index is bm25s's
own format; the identity names the bm25s and PyStemmer versions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import RunError, UsageError
from persona_eval.plugins.retrievers.common import IndexedRetriever, _version, np


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
