"""The `retrieved` persona source: the persona of the most similar training prompt.

This is what a deployed system has (the paper's "retrieved" setting): the training
partition's prompts are indexed with a retriever (the task's ``retrieval`` block, or
``--retriever NAME[,key=value...]``), the top-k for each test prompt are looked up, and
the best hit's persona on the same side as the split is used (its chosen persona for
``chosen``, its rejected persona for ``rejected``).

Leak-freedom: a training item with the test item's id, or whose prompt equals the test
prompt once case and whitespace are normalised, is never used; nor is one without a
persona on that side. Such hits are skipped (and listed in the provenance) and the
next one is taken. Provenance names the training item, its prompt, the score, its rank
in the retriever's list and the retriever's identity.
"""

from __future__ import annotations

import logging
import re
import unicodedata

logger = logging.getLogger("persona_eval.personas_retrieved")


_SPACE = re.compile(r"\s+")


def normalize_prompt(text: str) -> str:
    """The form two prompts are compared in: Unicode-normalised, case-folded, single spaces."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()
