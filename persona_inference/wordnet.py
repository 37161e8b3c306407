"""The WordNet noun lemmatiser that the paper's bias analysis used, found on this machine.

The paper's ``word_saliency.py`` calls NLTK's ``WordNetLemmatizer().lemmatize(word)``: part of
speech noun, the shortest of the word itself and its WordNet noun base forms (the exception
list ``noun.exc`` when the word is in it, else NLTK's noun suffix rules) that are WordNet noun
lemmas (``index.noun``), or the word unchanged when none is. NLTK's WordNet data cannot be
downloaded offline, so `wordnet_lemmatizer` uses, in this order: NLTK itself when its
``corpora/wordnet`` data is installed; else the same rule over a WordNet 3.0 database folder
(``$WNSEARCHDIR``, or the folder Debian's and Ubuntu's ``wordnet-base`` package installs,
``/usr/share/wordnet``). Without either it raises a `UsageError` that says how to get one.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Callable

from persona_eval.errors import UsageError

# NLTK's noun detachment rules (WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS[NOUN]), in order.
NOUN_SUFFIX_RULES = (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"),
                     ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"))

SYSTEM_FOLDERS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/local/WordNet-3.0/dict")

HOW_TO_GET = (
    "the paper's lemmatiser needs WordNet: install Debian's/Ubuntu's 'wordnet-base' package "
    "(apt-get install wordnet-base), set WNSEARCHDIR to a WordNet 3.0 'dict' folder, or run "
    "nltk.download('wordnet') where a network is reachable; or choose --lemmatizer suffix (our approximation) or none"
)


class WordNetNouns:
    """Noun lemmas and noun exceptions of one WordNet database, and NLTK's noun lemmatize over them."""

    def __init__(self, index_noun: str, noun_exc: str, where: str):
        self.where = where
        self.lemmas = frozenset(line.split(" ", 1)[0] for line in index_noun.splitlines() if line and not line.startswith(" "))
        self.exceptions: dict[str, list[str]] = {}
        for line in noun_exc.splitlines():
            terms = line.split()
            if terms:
                self.exceptions[terms[0]] = terms[1:]
        match = re.search(r"WordNet (\d+(?:\.\d+)*)", index_noun[:4000])
        self.version = match.group(1) if match else "unknown version"

    def candidates(self, form: str) -> list[str]:
        """NLTK's ``_morphy(form, 'n')``: the form and its base forms that are noun lemmas, in order."""
        if form in self.exceptions:
            forms = self.exceptions[form]
        else:
            forms = [form[: -len(old)] + new for old, new in NOUN_SUFFIX_RULES if form.endswith(old)]
        found: list[str] = []
        for candidate in [form, *forms]:
            if candidate in self.lemmas and candidate not in found:
                found.append(candidate)
        return found

    def lemmatize(self, word: str) -> str:
        lemmas = self.candidates(word)
        return min(lemmas, key=len) if lemmas else word


def _read_database(folder: Path) -> WordNetNouns | None:
    if not ((folder / "index.noun").is_file() and (folder / "noun.exc").is_file()):
        return None
    index, exc = ((folder / name).read_text(encoding="utf-8", errors="replace") for name in ("index.noun", "noun.exc"))
    return WordNetNouns(index, exc, str(folder))


def _nltk_lemmatizer() -> tuple[Callable[[str], str], str] | None:
    try:
        import nltk
        from nltk.stem import WordNetLemmatizer
    except ImportError:
        return None
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            return None
    lemmatizer = WordNetLemmatizer()
    return lemmatizer.lemmatize, f"wordnet (NLTK {nltk.__version__} WordNetLemmatizer, nltk_data)"


def database_folders() -> list[Path]:
    """Where a WordNet database is looked for, after NLTK's own data."""
    folders = [Path(os.environ["WNSEARCHDIR"])] if os.environ.get("WNSEARCHDIR") else []
    return folders + [Path(p) for p in SYSTEM_FOLDERS]


@functools.lru_cache(maxsize=1)
def wordnet_lemmatizer() -> tuple[Callable[[str], str], str]:
    """(lemmatize, a label naming what it runs on); `UsageError` when no WordNet is installed."""
    found = _nltk_lemmatizer()
    if found is not None:
        return found
    for folder in database_folders():
        nouns = _read_database(folder)
        if nouns is not None:
            return nouns.lemmatize, f"wordnet (WordNet {nouns.version} at {nouns.where}, NLTK's noun rules)"
    raise UsageError(HOW_TO_GET)
