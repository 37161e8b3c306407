"""Persona bias analysis: which words mark chosen personas and which mark rejected ones.

For each word we count the personas that contain it on each side (document frequency)
and estimate

    P(chosen | word) = r_c / (r_c + r_r),   r_side = count_side / personas_side

which is the plain share c / (c + r) when both sides hold the same number of personas,
and corrects for unequal sides otherwise. Words seen in fewer than `min_count` personas
are left out. Words are lower-cased, optionally reduced by a small suffix lemmatiser
(plurals and third-person -s), and each persona can be cut at its first contrast phrase
("rather than", "over", "instead of", "as opposed to"): what follows names what the
user does *not* want, and would otherwise count for the wrong side.

Inputs: persona-augmented records (an `infer` output or a task), or the paper's released
outputs (``--paper-outputs DIR``), where the persona sits in the prompt field as
``Prompt: ...\\nPersona: <persona>\\nResponse:``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import UsageError

CONTRAST_PHRASES = ("rather than", "instead of", "as opposed to", "over")
_CONTRAST = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in CONTRAST_PHRASES) + r")\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
_PERSONA_IN_PROMPT = re.compile(r"\nPersona:[ \t]*(.*?)\s*\nResponse:", re.DOTALL)

# Function words and the persona template's own words carry no preference.
STOPWORDS = frozenset(
    """a an the and or but nor of to in on at by for with from as is are was were be been being it its this that
    these those their them they he she his her i me my we our you your who whom whose which what when where why how
    than then so if not no do does did has have had can could would should will may might must also very more most
    such about into onto upon while both each other any all some own same just only too user users prefer prefers
    preferring preferred""".split()
)


def cut_at_contrast(text: str) -> str:
    match = _CONTRAST.search(text)
    return text[: match.start()] if match else text


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


def words_of(text: str, *, cut_contrast: bool = True, lemmas: bool = False, stopwords: frozenset[str] = STOPWORDS) -> set[str]:
    text = text.lower()
    if cut_contrast:
        text = cut_at_contrast(text)
    words = _WORD.findall(text)
    if lemmas:
        words = [lemmatize(w) for w in words]
    return {w for w in words if w not in stopwords and not w.isdigit()}


@dataclass
class WordStat:
    word: str
    chosen: int
    rejected: int
    p_chosen: float


def word_bias(
    chosen_personas: Sequence[str],
    rejected_personas: Sequence[str],
    *,
    min_count: int = 10,
    cut_contrast: bool = True,
    lemmas: bool = False,
    stopwords: frozenset[str] = STOPWORDS,
) -> list[WordStat]:
    """Per-word persona counts on each side and P(chosen | word), most chosen-leaning first."""
    if not chosen_personas or not rejected_personas:
        raise UsageError("the bias analysis needs personas on both sides (chosen and rejected)")
    counts: dict[str, list[int]] = {}
    for side, personas in ((0, chosen_personas), (1, rejected_personas)):
        for persona in personas:
            for word in words_of(persona, cut_contrast=cut_contrast, lemmas=lemmas, stopwords=stopwords):
                counts.setdefault(word, [0, 0])[side] += 1
    n_c, n_r = len(chosen_personas), len(rejected_personas)
    stats = []
    for word, (c, r) in counts.items():
        if c + r < min_count:
            continue
        rate_c, rate_r = c / n_c, r / n_r
        stats.append(WordStat(word, c, r, rate_c / (rate_c + rate_r)))
    stats.sort(key=lambda s: (-s.p_chosen, -(s.chosen + s.rejected), s.word))
    return stats


def bias_report(
    chosen_personas: Sequence[str],
    rejected_personas: Sequence[str],
    *,
    min_count: int = 10,
    top: int = 15,
    cut_contrast: bool = True,
    lemmas: bool = False,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    stats = word_bias(chosen_personas, rejected_personas, min_count=min_count, cut_contrast=cut_contrast, lemmas=lemmas)
    chosen_top = [s for s in stats if s.p_chosen > 0.5][:top]
    rejected_top = [s for s in sorted(stats, key=lambda s: (s.p_chosen, -(s.chosen + s.rejected), s.word)) if s.p_chosen < 0.5][:top]
    return {
        "source": source or {},
        "settings": {"min_count": min_count, "top": top, "cut_contrast": cut_contrast, "lemmatize": lemmas,
                     "contrast_phrases": list(CONTRAST_PHRASES) if cut_contrast else []},
        "personas": {"chosen": len(chosen_personas), "rejected": len(rejected_personas)},
        "words_counted": len(stats),
        "top_chosen": [asdict(s) for s in chosen_top],
        "top_rejected": [asdict(s) for s in rejected_top],
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


def render_markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "# Persona bias report",
        "",
        f"Source: {json.dumps(report['source'], ensure_ascii=False)}",
        "",
        f"{report['personas']['chosen']} chosen and {report['personas']['rejected']} rejected personas; "
        f"{report['words_counted']} words seen in at least {settings['min_count']} personas. "
        f"Lemmatised: {'yes' if settings['lemmatize'] else 'no'}. "
        + (f"Cut at contrast phrases: {', '.join(repr(p) for p in settings['contrast_phrases'])}." if settings["cut_contrast"] else "Not cut at contrast phrases."),
        "",
        "P(chosen | word) is the share of the word's personas on the chosen side (after equalising side sizes); 0.5 is no bias.",
        "",
    ]
    for title, key in (("Words of chosen personas", "top_chosen"), ("Words of rejected personas", "top_rejected")):
        lines += [f"## {title}", "", "| word | P(chosen \\| word) | chosen | rejected |", "|---|---:|---:|---:|"]
        lines += [f"| {s['word']} | {s['p_chosen']:.3f} | {s['chosen']} | {s['rejected']} |" for s in report[key]]
        lines.append("")
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
