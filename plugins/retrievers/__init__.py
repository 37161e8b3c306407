"""The built-in retrievers `dense`, `bm25` and `colbert`, registered lazily.

A retriever indexes texts and returns, for a query, indices into those texts with scores, best
first. The `retrieved` persona source uses one to find the training prompt most like a test
prompt; options come from the task's ``retrieval.options`` or ``--retriever NAME,key=value,...``.
Each is registered as a ``"module:Class"`` string, so its module (numpy, sentence-transformers,
bm25s or PyLate with it) loads only when that retriever is created, not at `persona-eval --help`.
Each retriever's options and requirements are described in its own module.
"""

from __future__ import annotations

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_retrievers(register):
    register("dense", "persona_eval.plugins.retrievers.dense:DenseRetriever",
             description="sentence-transformers cosine similarity (default all-MiniLM-L6-v2, offline)")
    register("bm25", "persona_eval.plugins.retrievers.bm25:BM25Retriever", description="Okapi BM25 via bm25s")
    register("colbert", "persona_eval.plugins.retrievers.colbert:ColBERTRetriever",
             description="ColBERT late interaction via PyLate (the colbert extra)")
