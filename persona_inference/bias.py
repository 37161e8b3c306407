"""Persona bias analysis: which words mark chosen personas and which mark rejected ones.

Two presets (`PRESETS`, `settings_for`). ``ours``, the default: a word counts once per persona
(document frequency), after lower-casing, cutting the persona at its first contrast phrase
(whole words: "rather than", "instead of", "as opposed to", "versus", "compared to", "over":
what follows names what the user does *not* want, and would otherwise count for the wrong side)
and dropping function words; then

    P(chosen | word) = r_c / (r_c + r_r),   r_side = count_side / personas_side

(the plain share c / (c + r) when both sides hold as many personas), leaving out words seen in
fewer than `min_count` personas; ties go to the more frequent word. ``paper`` reproduces the
paper's ``persona_inference/evaluation/word_saliency.py``: the persona's first sentence,
lower-cased, cut with ``str.split`` at 'rather than', 'over', 'versus', 'compared to' and
'instead of' in that order (plain substrings, so 'over' also cuts 'overall'), tokenised by
NLTK's word tokenizer, ',', '.' and "'" removed from each token, each token lemmatised by
WordNet as a noun; every token counts (no stop words) and P(chosen | word) = c / (c + r) over
token counts, words with fewer than 3 tokens left out, ranked by that probability alone (ties
in the order the words were first seen, chosen personas first).

Identical personas on one side count once unless `keep_duplicates` (the paper's preset keeps
them: the paper counted every line of its persona file). Every report also lists the top words
at several cut-offs side by side (``stability``), so a list that is an artefact of the cut-off
shows as one.

Inputs: persona-augmented records (an `infer` output or a task), or the paper's released
outputs (``--paper-outputs DIR``), where the persona sits in the prompt field as
``Prompt: ...\nPersona: <persona>\nResponse:``.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from persona_eval.errors import UsageError

CONTRAST_PHRASES = ("rather than", "instead of", "as opposed to", "versus", "compared to", "over")
# word_saliency.py's split_words, in its order.
PAPER_CONTRAST_PHRASES = ("rather than", "over", "versus", "compared to", "instead of")
STABILITY_CUTOFFS = (3, 5, 10, 20)
STABILITY_TOP = 10
LEMMATIZERS = ("none", "suffix", "wordnet")
_WORD = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
_PERSONA_IN_PROMPT = re.compile(r"\nPersona:[ \t]*(.*?)\s*\nResponse:", re.DOTALL)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|etc|vs|mr|mrs|ms|dr|st|approx|incl|u\.s)\.$", re.IGNORECASE)

# Function words and the persona template's own words carry no preference.
STOPWORDS = frozenset(
    """a an the and or but nor of to in on at by for with from as is are was were be been being it its this that
    these those their them they he she his her i me my we our you your who whom whose which what when where why how
    than then so if not no do does did has have had can could would should will may might must also very more most
    such about into onto upon while both each other any all some own same just only too user users prefer prefers
    preferring preferred""".split()
)


@dataclass(frozen=True)
class BiasSettings:
    """What is counted and how it is ranked (see the module docstring; `PRESETS` holds both presets)."""

    preset: str = "ours"
    min_count: int = 10  # leave out words counted fewer times than this
    top: int = 15  # words listed per side
    cut_contrast: bool = True
    contrast_phrases: tuple[str, ...] = CONTRAST_PHRASES
    contrast_match: str = "word"  # "word": whole words, first of any; "substring": the paper's str.split, in order
    first_sentence: bool = False  # count only the persona's first sentence
    tokenizer: str = "words"  # "words": runs of letters and digits; "treebank": NLTK's word tokenizer
    lemmatizer: str = "none"  # "none" | "suffix" (ours, plurals and -s verbs) | "wordnet" (NLTK's, as nouns)
    stopwords: bool = True  # drop function words and numbers
    unit: str = "persona"  # "persona": a word counts once per persona; "token": every occurrence
    statistic: str = "balanced"  # "balanced": per-side rates; "share": c / (c + r)
    ties: str = "count"  # "count": more frequent, then alphabetical; "first_seen": the paper's stable sort
    leaning_only: bool = True  # list a word on the side it leans to only
    keep_duplicates: bool = False  # identical personas on one side count once unless True


PRESETS: dict[str, BiasSettings] = {
    "ours": BiasSettings(),
    "paper": BiasSettings(
        preset="paper", min_count=3, top=10, contrast_phrases=PAPER_CONTRAST_PHRASES, contrast_match="substring",
        first_sentence=True, tokenizer="treebank", lemmatizer="wordnet", stopwords=False, unit="token",
        statistic="share", ties="first_seen", leaning_only=False, keep_duplicates=True,
    ),
}


def settings_for(preset: str = "ours", **overrides: Any) -> BiasSettings:
    """A preset's settings with the given overrides (None leaves the preset's value)."""
    if preset not in PRESETS:
        raise UsageError(f"unknown --preset {preset!r} (choose: {', '.join(PRESETS)})")
    names = {f.name for f in fields(BiasSettings)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown bias settings: {', '.join(sorted(unknown))}")
    settings = replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
    if settings.lemmatizer not in LEMMATIZERS:
        raise UsageError(f"unknown --lemmatizer {settings.lemmatizer!r} (choose: {', '.join(LEMMATIZERS)})")
    return settings


def parse_cutoffs(text: str) -> list[int]:
    """'3,5,10,20' -> [3, 5, 10, 20]: the cut-offs of the stability table (at most 8)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or len(parts) > 8 or not all(p.isdigit() and 1 <= int(p) <= 10_000_000 for p in parts):
        raise UsageError(f"--cutoffs wants 1 to 8 positive whole numbers separated by commas, got {text!r}")
    return sorted({int(p) for p in parts})


@functools.lru_cache(maxsize=16)
def _contrast_pattern(phrases: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(re.escape(p) for p in phrases) + r")\b", re.IGNORECASE)


def cut_at_contrast(text: str, phrases: Sequence[str] = CONTRAST_PHRASES, *, match: str = "word") -> str:
    """The text before its first contrast phrase (``match="substring"``: the paper's sequential
    ``text.split(phrase)[0]``, case-sensitive, inside words too)."""
    if match == "substring":
        for phrase in phrases:
            text = text.split(phrase)[0]
        return text
    found = _contrast_pattern(tuple(phrases)).search(text)
    return text[: found.start()] if found else text


def lemmatize(word: str) -> str:
    """A deliberately small lemmatiser: plural nouns and third-person verbs to their base form."""
    if "-" in word or len(word) <= 3 or word.endswith(("ss", "us", "is", "ous")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def _rule_first_sentence(text: str) -> str:
    for end in _SENTENCE_END.finditer(text):
        if not _ABBREVIATION.search(text[: end.end()]):
            return text[: end.end()].strip()
    return text.strip()


def _sentence_splitter() -> tuple[Callable[[str], str], str]:
    """NLTK's punkt, as the paper, where its data is installed; else a rule close to it."""
    try:
        import nltk

        nltk.data.find("tokenizers/punkt_tab/english/")
    except (ImportError, LookupError):
        return _rule_first_sentence, ("rule: up to the first '.', '!' or '?' before a space, common abbreviations "
                                      "skipped (NLTK's punkt data is not installed)")
    return (lambda text: (nltk.sent_tokenize(text) or [""])[0]), f"punkt (NLTK {nltk.__version__})"


def _word_tokenizer() -> tuple[Callable[[str], list[str]], str]:
    try:
        import nltk
        from nltk.tokenize import NLTKWordTokenizer
    except ImportError as exc:
        raise UsageError("the paper's settings tokenise with NLTK's word tokenizer: pip install 'persona-eval[analysis]' "
                         "(or nltk)") from exc
    try:  # with punkt installed, word_tokenize itself; it only adds sentence splitting
        nltk.data.find("tokenizers/punkt_tab/english/")
        return nltk.word_tokenize, f"word_tokenize (NLTK {nltk.__version__})"
    except LookupError:
        return NLTKWordTokenizer().tokenize, f"NLTKWordTokenizer (NLTK {nltk.__version__}; word_tokenize without punkt)"


class _Pipeline:
    """Persona text -> counted tokens, under one `BiasSettings`."""

    def __init__(self, settings: BiasSettings, stopwords: frozenset[str] = STOPWORDS):
        self.settings = settings
        self.stopwords = stopwords if settings.stopwords else frozenset()
        self.labels: dict[str, str] = {}
        self.sentence: Callable[[str], str] | None = None
        if settings.first_sentence:
            self.sentence, self.labels["sentence"] = _sentence_splitter()
        if settings.tokenizer == "treebank":
            self.tokenize, self.labels["tokenizer"] = _word_tokenizer()
        else:
            self.tokenize, self.labels["tokenizer"] = _WORD.findall, "words: runs of letters and digits (- and ' inside)"
        if settings.lemmatizer == "wordnet":
            from persona_eval.persona_inference.wordnet import wordnet_lemmatizer

            self.lemma, self.labels["lemmatizer"] = wordnet_lemmatizer()
        elif settings.lemmatizer == "suffix":
            self.lemma, self.labels["lemmatizer"] = lemmatize, "suffix: plurals and third-person -s (ours)"
        else:
            self.lemma, self.labels["lemmatizer"] = None, "none"

    def tokens(self, text: str) -> list[str]:
        s = self.settings
        text = text.lower()
        if self.sentence is not None:
            text = self.sentence(text)
        if s.cut_contrast:
            text = cut_at_contrast(text, s.contrast_phrases, match=s.contrast_match)
        words = self.tokenize(text)
        if s.tokenizer == "treebank":
            # word_saliency.py: w.lower().replace(',', '').replace('.', '').replace("'", '')
            words = [w.replace(",", "").replace(".", "").replace("'", "") for w in words]
        if self.lemma is not None:
            words = [self.lemma(w) for w in words]
        # Departure from the paper's script: a token left empty by that clean-up (',', '.', "''")
        # is punctuation, not a word, so it is not counted.
        return [w for w in words if w and w not in self.stopwords and not (s.stopwords and w.isdigit())]


def words_of(text: str, *, cut_contrast: bool = True, lemmas: bool = False, stopwords: frozenset[str] = STOPWORDS) -> set[str]:
    """The words one persona counts with under our preset."""
    settings = replace(PRESETS["ours"], cut_contrast=cut_contrast, lemmatizer="suffix" if lemmas else "none")
    return set(_Pipeline(settings, stopwords).tokens(text))


@dataclass
class WordStat:
    word: str
    chosen: int
    rejected: int
    p_chosen: float


def unique_personas(personas: Sequence[str]) -> list[str]:
    """Each persona once (the first of identical ones, ignoring case and spacing), in order."""
    seen: set[str] = set()
    out = []
    for persona in personas:
        key = " ".join(persona.split()).casefold()
        if key not in seen:
            seen.add(key)
            out.append(persona)
    return out


def count_words(chosen_personas: Sequence[str], rejected_personas: Sequence[str], pipeline: _Pipeline) -> dict[str, list[int]]:
    """word -> [chosen count, rejected count], words in the order first seen (chosen personas first)."""
    if not chosen_personas or not rejected_personas:
        raise UsageError("the bias analysis needs personas on both sides (chosen and rejected)")
    counts: dict[str, list[int]] = {}
    once = pipeline.settings.unit == "persona"
    for side, personas in ((0, chosen_personas), (1, rejected_personas)):
        for persona in personas:
            tokens = pipeline.tokens(persona)
            for word in dict.fromkeys(tokens) if once else tokens:
                counts.setdefault(word, [0, 0])[side] += 1
    return counts


def rank(counts: dict[str, list[int]], n_chosen: int, n_rejected: int, settings: BiasSettings, min_count: int) -> list[WordStat]:
    """Words counted at least `min_count` times, most chosen-leaning first."""
    stats = []
    for word, (c, r) in counts.items():
        if c + r < min_count:
            continue
        if settings.statistic == "share":
            p = c / (c + r)
        else:
            rate_c, rate_r = c / n_chosen, r / n_rejected
            p = rate_c / (rate_c + rate_r)
        stats.append(WordStat(word, c, r, p))
    if settings.ties == "first_seen":
        stats.sort(key=lambda s: -s.p_chosen)  # stable: equal probabilities stay in first-seen order
    else:
        stats.sort(key=lambda s: (-s.p_chosen, -(s.chosen + s.rejected), s.word))
    return stats


def top_words(stats: Sequence[WordStat], settings: BiasSettings, side: str, n: int) -> list[WordStat]:
    """The `n` words that mark `side` most, from `rank`'s list."""
    if side == "chosen":
        ordered = list(stats)
    elif settings.ties == "first_seen":
        # The paper ranks P(rejected | word) itself; `stats` keeps equal ones in first-seen order.
        key = (lambda s: -s.rejected / (s.chosen + s.rejected)) if settings.statistic == "share" else (lambda s: s.p_chosen)
        ordered = sorted(stats, key=key)
    else:
        ordered = sorted(stats, key=lambda s: (s.p_chosen, -(s.chosen + s.rejected), s.word))
    if settings.leaning_only:
        ordered = [s for s in ordered if (s.p_chosen > 0.5 if side == "chosen" else s.p_chosen < 0.5)]
    return ordered[:n]


def word_bias(
    chosen_personas: Sequence[str],
    rejected_personas: Sequence[str],
    *,
    min_count: int = 10,
    cut_contrast: bool = True,
    lemmas: bool = False,
    stopwords: frozenset[str] = STOPWORDS,
    settings: BiasSettings | None = None,
) -> list[WordStat]:
    """Per-word counts on each side and P(chosen | word), most chosen-leaning first.

    Counts the personas as given (no de-duplication; `bias_report` does that). `settings`,
    when given, replaces the other keyword arguments but `stopwords`.
    """
    if settings is None:
        settings = replace(PRESETS["ours"], min_count=min_count, cut_contrast=cut_contrast,
                           lemmatizer="suffix" if lemmas else "none")
    counts = count_words(chosen_personas, rejected_personas, _Pipeline(settings, stopwords))
    return rank(counts, len(chosen_personas), len(rejected_personas), settings, settings.min_count)


def _stability(counts, n_chosen: int, n_rejected: int, settings: BiasSettings, cutoffs: Sequence[int], top: int) -> dict[str, Any]:
    table: dict[str, Any] = {"top": top, "cutoffs": list(cutoffs), "chosen": {}, "rejected": {}}
    for cutoff in cutoffs:
        stats = rank(counts, n_chosen, n_rejected, settings, cutoff)
        for side in ("chosen", "rejected"):
            table[side][str(cutoff)] = [asdict(s) for s in top_words(stats, settings, side, top)]
    table["in_every_cutoff"] = {
        side: [w["word"] for w in table[side][str(cutoffs[0])]
               if all(w["word"] in {x["word"] for x in table[side][str(c)]} for c in cutoffs)] if cutoffs else []
        for side in ("chosen", "rejected")
    }
    return table


def bias_report(
    chosen_personas: Sequence[str],
    rejected_personas: Sequence[str],
    *,
    preset: str = "ours",
    settings: BiasSettings | None = None,
    min_count: int | None = None,
    top: int | None = None,
    cut_contrast: bool | None = None,
    lemmas: bool | None = None,
    lemmatizer: str | None = None,
    keep_duplicates: bool | None = None,
    cutoffs: Sequence[int] = STABILITY_CUTOFFS,
    stability_top: int = STABILITY_TOP,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole analysis as a JSON-ready dict: settings, counts, top words per side, stability."""
    if settings is None:
        if lemmatizer is None and lemmas is not None:
            lemmatizer = "suffix" if lemmas else "none"
        settings = settings_for(preset, min_count=min_count, top=top, cut_contrast=cut_contrast, lemmatizer=lemmatizer,
                                keep_duplicates=keep_duplicates)
    given = {"chosen": len(chosen_personas), "rejected": len(rejected_personas)}
    if not settings.keep_duplicates:
        chosen_personas, rejected_personas = unique_personas(chosen_personas), unique_personas(rejected_personas)
    pipeline = _Pipeline(settings)
    counts = count_words(chosen_personas, rejected_personas, pipeline)
    n_c, n_r = len(chosen_personas), len(rejected_personas)
    stats = rank(counts, n_c, n_r, settings, settings.min_count)
    described = {f.name: (list(v) if isinstance(v, tuple) else v) for f in fields(settings) for v in [getattr(settings, f.name)]}
    described.update(lemmatize=settings.lemmatizer != "none", backends=pipeline.labels)
    if not settings.cut_contrast:
        described["contrast_phrases"] = []
    return {
        "source": source or {},
        "settings": described,
        "personas": {"chosen": n_c, "rejected": n_r},
        "personas_given": given,
        "duplicates_removed": {"chosen": given["chosen"] - n_c, "rejected": given["rejected"] - n_r},
        "words_counted": len(stats),
        "top_chosen": [asdict(s) for s in top_words(stats, settings, "chosen", settings.top)],
        "top_rejected": [asdict(s) for s in top_words(stats, settings, "rejected", settings.top)],
        "stability": _stability(counts, n_c, n_r, settings, list(cutoffs), stability_top),
        "words": [asdict(s) for s in stats],
    }


# ---- inputs ----------------------------------------------------------------------------


def persona_from_prompt(prompt: str) -> str | None:
    match = _PERSONA_IN_PROMPT.search(prompt)
    return match.group(1).strip() if match else None


def _read_array(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read: {exc.strerror}", where=str(path)) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"malformed JSON: {exc}", where=str(path)) from exc
    if not isinstance(data, list):
        raise UsageError("expected one JSON array of {prompt, response} objects", where=str(path))
    return data


def paper_personas(root: str | Path, dataset: str, *, kind: str = "gold", model: str = "pt_dpo") -> tuple[list[str], list[str]]:
    """Chosen and rejected personas from the paper's released outputs, read in place.

    `root` is the paper-outputs folder (holding one folder per dataset) or a dataset folder.
    """
    root = Path(root)
    folder = root / dataset if (root / dataset).is_dir() else root
    sides = []
    for side in ("chosen", "rejected"):
        path = folder / f"{model}__{kind}-{side}.json"
        if not path.is_file():
            raise UsageError(f"no {path.name} here (expected <model>__{kind}-<side>.json)", where=str(folder))
        personas = []
        for index, record in enumerate(_read_array(path)):
            prompt = record.get("prompt") if isinstance(record, dict) else None
            persona = persona_from_prompt(prompt) if isinstance(prompt, str) else None
            if not persona:
                raise UsageError("no 'Persona: ...' line in the prompt field", where=f"{path}[{index}]")
            personas.append(persona)
        sides.append(personas)
    return sides[0], sides[1]


def personas_from_records(records: Sequence[tuple[str, dict[str, Any]]], chosen_field: str, rejected_field: str) -> tuple[list[str], list[str]]:
    chosen, rejected = [], []
    for where, record in records:
        for key, out in ((chosen_field, chosen), (rejected_field, rejected)):
            value = record.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise UsageError(f"field {key!r} must be text, got {type(value).__name__}", where=where)
            out.append(value)
    if not chosen or not rejected:
        raise UsageError(f"no personas found in fields {chosen_field!r} and {rejected_field!r}")
    return chosen, rejected


# ---- outputs ---------------------------------------------------------------------------


def _describe(report: dict[str, Any]) -> list[str]:
    st = report["settings"]
    unit = "every occurrence of a word counts" if st["unit"] == "token" else "a word counts once per persona"
    statistic = ("c / (c + r), the share of the word's counts on the chosen side" if st["statistic"] == "share"
                 else "the share of the word's personas on the chosen side after equalising side sizes")
    given, removed = report.get("personas_given", report["personas"]), report.get("duplicates_removed", {})
    dupes = ("duplicates kept (--keep-duplicates)" if st.get("keep_duplicates") else
             f"identical personas counted once ({removed.get('chosen', 0)} chosen and {removed.get('rejected', 0)} rejected duplicates left out)")
    if st["cut_contrast"]:
        how = "substrings, in this order" if st.get("contrast_match") == "substring" else "whole words, at the first"
        cut = f"cut at contrast phrases ({how}): {', '.join(repr(p) for p in st['contrast_phrases'])}"
    else:
        cut = "not cut at contrast phrases"
    backends = st.get("backends", {})
    lines = [
        f"Preset: {st.get('preset', 'ours')}. {given['chosen']} chosen and {given['rejected']} rejected personas given; {dupes}.",
        "",
        f"Counted: {'the first sentence of each persona, ' if st.get('first_sentence') else ''}lower-cased, {cut}; "
        f"tokenizer: {backends.get('tokenizer', 'words')}; lemmatizer: {backends.get('lemmatizer', st.get('lemmatizer', 'none'))}; "
        f"{'function words dropped' if st.get('stopwords', True) else 'every token kept (no stop words)'}; {unit}."
        + (f" Sentence: {backends['sentence']}." if "sentence" in backends else ""),
        "",
        f"{report['words_counted']} words counted at least {st['min_count']} times. "
        f"P(chosen | word) is {statistic}; 0.5 is no bias.",
    ]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Persona bias report", "", f"Source: {json.dumps(report['source'], ensure_ascii=False)}", "", *_describe(report), ""]
    for title, key in (("Words of chosen personas", "top_chosen"), ("Words of rejected personas", "top_rejected")):
        lines += [f"## {title}", "", "| word | P(chosen \\| word) | chosen | rejected |", "|---|---:|---:|---:|"]
        lines += [f"| {s['word']} | {s['p_chosen']:.3f} | {s['chosen']} | {s['rejected']} |" for s in report[key]]
        lines.append("")
    stability = report.get("stability")
    if stability and stability["cutoffs"]:
        cutoffs = stability["cutoffs"]
        lines += [
            "## Stability across cut-offs", "",
            f"The top {stability['top']} words of each side at each --min-count, as (chosen/rejected) counts. "
            "Words in bold are in the top list at every cut-off; a list that changes a lot from one column "
            "to the next is an artefact of the cut-off, not a finding.", "",
        ]
        for side in ("chosen", "rejected"):
            steady = set(stability["in_every_cutoff"][side])
            lines += [f"### {side.capitalize()} personas", "",
                      "| rank | " + " | ".join(f"min-count {c}" for c in cutoffs) + " |",
                      "|---:|" + "---|" * len(cutoffs)]
            columns = [stability[side][str(c)] for c in cutoffs]
            for rank_index in range(max((len(col) for col in columns), default=0)):
                cells = []
                for col in columns:
                    if rank_index < len(col):
                        w = col[rank_index]
                        name = f"**{w['word']}**" if w["word"] in steady else w["word"]
                        cells.append(f"{name} ({w['chosen']}/{w['rejected']})")
                    else:
                        cells.append("")
                lines.append(f"| {rank_index + 1} | " + " | ".join(cells) + " |")
            lines += ["", f"In the top {stability['top']} at every cut-off: {', '.join(stability['in_every_cutoff'][side]) or 'none'}.", ""]
    return "\n".join(lines)


def render_chart(report: dict[str, Any], path: Path) -> None:
    """Horizontal bars of P(chosen | word) - 0.5 for the top words of each side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # barh draws the first row at the bottom: strongest rejected words there, strongest chosen on top.
    rows = list(report["top_rejected"]) + list(reversed(report["top_chosen"]))
    words = [r["word"] for r in rows]
    values = [r["p_chosen"] - 0.5 for r in rows]
    colors = ["#c0392b" if v < 0 else "#2471a3" for v in values]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(rows) + 1)))
    ax.barh(range(len(rows)), values, color=colors)
    ax.set_yticks(range(len(rows)), words)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-0.5, 0.5)
    ticks = [-0.5, -0.25, 0, 0.25, 0.5]
    ax.set_xticks(ticks, [f"{t + 0.5:.2f}" for t in ticks])
    ax.set_xlabel("P(chosen | word)   (left: rejected personas, right: chosen personas)")
    ax.set_title("Persona bias: words over-represented per side")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=120)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def write_report(report: dict[str, Any], out_dir: Path, *, chart: bool = True) -> dict[str, str]:
    from persona_eval.storage.files import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    written = {"json": str(out_dir / "persona_bias.json"), "markdown": str(out_dir / "persona_bias.md")}
    atomic_write_json(out_dir / "persona_bias.json", report)
    atomic_write_text(out_dir / "persona_bias.md", render_markdown(report) + "\n")
    if chart:
        render_chart(report, out_dir / "persona_bias.png")
        written["chart"] = str(out_dir / "persona_bias.png")
    return written
