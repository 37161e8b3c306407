"""Persona inference (PI): abduce why a user preferred one response, on any generator backend.

For a preference pair (prompt, chosen, rejected) the *chosen persona* explains why a user
would prefer the chosen response; the *rejected persona* is the same question with the
responses swapped. Here live:

- the few-shot prompt (our own wording; exemplars from a YAML/JSONL file, defaults in
  ``data/pi_exemplars.yaml``) and its hash;
- post-processing: first sentence, normalisation, the "The user is ... and prefers ..."
  format check, a protected-attribute screen and an adversarial (harm-seeking) flag;
- `PersonaInferrer`: batched, cached inference through `stages.cached_map`, re-asking a
  persona that fails the format or the screen and dropping it after the last attempt;
- `infer_file`: the `persona-eval infer` pipeline (record-by-record JSON Lines output that
  resumes after a crash, a dropped-items file, a summary, optional Parquet / hub push);
- the `inferred` persona source, which infers each test item's persona at test time.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import RunError, UsageError
from persona_eval.hookspecs import hookimpl
from persona_eval.interfaces import Generator, PersonaSource
from persona_eval.records import Example, GenParams, GenRequest, GenResult, Persona
from persona_eval.util import stable_hash

logger = logging.getLogger("persona_eval.persona_inference")

DEFAULT_EXEMPLARS = Path(__file__).resolve().parent / "data" / "pi_exemplars.yaml"
PERSONA_PREFIX = "The user is"
STAGE = "persona_inference"

SYSTEM_PROMPT = (
    "You explain preferences by describing the person behind them. A user asked a prompt and "
    "was shown two responses; they preferred one of them. Write the persona of this user: one "
    "short sentence of the form \"The user is [attribute] and prefers [explanation]\". Describe "
    "only high-level traits that explain the preference, such as information needs, interests, "
    "expertise, situation and personality. Never mention race, ethnicity, religion, gender, "
    "age, nationality, sexual orientation, disability or any other protected attribute."
)

BLOCK_TEMPLATE = "Prompt: {prompt}\nPreferred response: {preferred}\nOther response: {other}\nPersona:"

REASK_NOTES = {
    "format": "Answer with exactly one sentence that starts with \"The user is\" and contains \"and prefers\".",
    "protected": (
        "Do not mention race, ethnicity, religion, gender, age, nationality, sexual orientation, "
        "disability or other protected attributes; describe needs, interests and personality instead."
    ),
}


# ---- exemplars and the prompt ----------------------------------------------------------


@dataclass(frozen=True)
class Exemplar:
    prompt: str
    preferred: str
    dispreferred: str
    persona: str


_EXEMPLAR_KEYS = {"prompt": ("prompt",), "preferred": ("preferred", "chosen"), "dispreferred": ("dispreferred", "rejected", "other"), "persona": ("persona", "chosen_persona")}


def _exemplar_from(record: Any, where: str) -> Exemplar:
    if not isinstance(record, dict):
        raise UsageError("an exemplar must be a mapping with prompt, preferred, dispreferred and persona", where=where)
    values = {}
    for name, keys in _EXEMPLAR_KEYS.items():
        key = next((k for k in keys if k in record), None)
        if key is None:
            raise UsageError(f"exemplar is missing {name!r} (accepted keys: {', '.join(keys)})", where=where)
        value = record[key]
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"exemplar field {key!r} must be non-empty text", where=where)
        values[name] = " ".join(value.split()) if name == "persona" else value.strip()
    problem = format_problem(values["persona"])
    if problem:
        raise UsageError(f"exemplar persona {values['persona']!r} does not follow the persona format: {problem}", where=where)
    return Exemplar(**values)


def load_exemplars(path: str | os.PathLike | None = None) -> list[Exemplar]:
    """Exemplars from a YAML file (a list, or a mapping with `exemplars:`) or JSON Lines."""
    import yaml

    path = Path(path) if path else DEFAULT_EXEMPLARS
    if not path.is_file():
        raise UsageError("exemplars file not found", where=str(path))
    if path.suffix.lower() == ".jsonl":
        from persona_eval.jsonl import iter_jsonl

        with open(path, "rb") as handle:
            numbers = [i for i, line in enumerate(handle, start=1) if line.strip()]
        exemplars = [_exemplar_from(r, f"{path}:{n}") for n, r in zip(numbers, iter_jsonl(path))]
    else:
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text)
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except UnicodeDecodeError as exc:
            raise UsageError(f"not UTF-8 text ({exc.reason})", where=str(path)) from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise UsageError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", where=f"{path}:{mark.line + 1}" if mark else str(path)) from exc
        items_node = root
        if isinstance(data, dict):
            data = data.get("exemplars")
            items_node = next((v for k, v in root.value if getattr(k, "value", None) == "exemplars"), None)
        if not isinstance(data, list):
            raise UsageError("expected a list of exemplars (or a mapping with an 'exemplars' list)", where=f"{path}:1")
        exemplars = []
        for index, record in enumerate(data):
            line = items_node.value[index].start_mark.line + 1 if items_node is not None else index + 1
            exemplars.append(_exemplar_from(record, f"{path}:{line}"))
    if not exemplars:
        raise UsageError("the exemplars file holds no exemplars", where=str(path))
    return exemplars


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    if limit and len(text) > limit:
        return text[:limit].rstrip() + " [...]"
    return text


class PersonaPrompt:
    """Renders the few-shot PI prompt: k exemplars, then the query pair."""

    def __init__(self, exemplars: Sequence[Exemplar], k: int = 4, max_response_chars: int = 1500):
        if k < 0:
            raise UsageError("--k must be zero or positive")
        if k > len(exemplars):
            raise UsageError(f"--k {k} asks for more exemplars than the file holds ({len(exemplars)})")
        self.exemplars = list(exemplars)
        self.k = k
        self.max_response_chars = max_response_chars

    def shots(self, prompt: str) -> list[Exemplar]:
        # The same fixed exemplars for every query (a shared prefix batches and caches well),
        # except one whose prompt is the query itself.
        key = prompt.strip()
        return [e for e in self.exemplars if e.prompt.strip() != key][: self.k]

    def block(self, prompt: str, preferred: str, other: str) -> str:
        clip = self.max_response_chars
        return BLOCK_TEMPLATE.format(prompt=_clip(prompt, clip * 2), preferred=_clip(preferred, clip), other=_clip(other, clip))

    def render(self, prompt: str, preferred: str, other: str, note: str = "") -> str:
        parts = [f"{self.block(e.prompt, e.preferred, e.dispreferred)} {e.persona}" for e in self.shots(prompt)]
        query = self.block(prompt, preferred, other)
        head = "Here are examples of preference pairs and the persona that explains each preference." if parts else ""
        tail = "Now write the persona for this pair, in one sentence."
        if note:
            tail += " " + note
        body = "\n\n".join(parts + [query])
        return f"{head}\n\n{body}\n\n{tail}".strip() if head else f"{body}\n\n{tail}"

    def identity(self) -> dict[str, Any]:
        return {
            "system": stable_hash(SYSTEM_PROMPT, 16),
            "template": stable_hash([BLOCK_TEMPLATE, REASK_NOTES], 16),
            "exemplars": stable_hash([e.__dict__ for e in self.exemplars[: self.k + 1]], 16),
            "k": self.k,
            "max_response_chars": self.max_response_chars,
        }

    def hash(self) -> str:
        return stable_hash(self.identity(), 16)


# ---- post-processing -------------------------------------------------------------------

_ABBREVIATIONS = re.compile(r"\b(e\.g|i\.e|etc|vs|mr|mrs|ms|dr|st|approx|incl|u\.s)\.$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:persona|answer|output)\s*(?:\*\*)?\s*:\s*", re.IGNORECASE)
_PREFIX = re.compile(r"^the user is\b", re.IGNORECASE)
_PREFERS = re.compile(r"\bprefer(?:s|ring|red)?\b", re.IGNORECASE)


def first_sentence(text: str) -> str:
    """The first sentence of the first non-empty line (abbreviations such as 'e.g.' do not end it)."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    for match in _SENTENCE_END.finditer(line):
        if not _ABBREVIATIONS.search(line[: match.end()]):
            return line[: match.end()].strip()
    return line


def normalize_persona(text: str, *, prefixed: bool = False) -> str:
    """Clean one model output into a single persona sentence.

    ``prefixed`` means the request forced the reply to begin with "The user is", so the
    generated text is its continuation.
    """
    text = text.replace("\r", "")
    text = text.strip()
    if prefixed and not _PREFIX.match(_LABEL.sub("", text.lstrip("*\"' "))):
        text = f"{PERSONA_PREFIX} {text}"
    text = _LABEL.sub("", text.strip())
    text = first_sentence(text)
    text = text.strip().strip("*_`").strip().strip("\"'\u201c\u201d").strip()
    text = " ".join(text.split())
    if _PREFIX.match(text):
        text = PERSONA_PREFIX + text[len(PERSONA_PREFIX):]
    text = text.rstrip(",;:- ")
    if text and text[-1] not in ".!?":
        text += "."
    return text


def format_problem(text: str, *, min_words: int = 6, max_words: int = 60) -> str | None:
    """Why `text` is not a persona sentence of the paper's form, or None when it is."""
    if not text.strip():
        return "empty"
    if not _PREFIX.match(text):
        return "does not start with 'The user is'"
    if not _PREFERS.search(text[len(PERSONA_PREFIX):]):
        return "no 'prefers' clause"
    words = len(text.split())
    if words < min_words:
        return f"too short ({words} words)"
    if words > max_words:
        return f"too long ({words} words)"
    after = _PREFERS.split(text, maxsplit=1)[-1].strip(" .!?")
    if not after:
        return "nothing after 'prefers'"
    return None


def _terms(*words: str) -> str:
    return "|".join(words)


_DEMONYMS = _terms(
    "american", "americans", "british", "english", "scottish", "irish", "welsh", "canadian", "mexican", "brazilian",
    "argentinian", "chilean", "colombian", "peruvian", "cuban", "french", "german", "italian", "spanish", "portuguese",
    "dutch", "belgian", "swiss", "austrian", "swedish", "norwegian", "danish", "finnish", "polish", "russian",
    "ukrainian", "greek", "turkish", "israeli", "iranian", "iraqi", "syrian", "saudi", "egyptian", "moroccan",
    "nigerian", "kenyan", "ethiopian", "ghanaian", "south african", "indian", "pakistani", "bangladeshi", "chinese",
    "japanese", "korean", "vietnamese", "thai", "filipino", "indonesian", "malaysian", "australian", "new zealander",
)
# Nouns after a demonym that make it about a thing, not about the user ("French cooking").
_DEMONYM_THINGS = _terms(
    "cuisine", "food", "foods", "cooking", "dish", "dishes", "recipe", "recipes", "language", "languages", "grammar",
    "history", "literature", "culture", "music", "art", "law", "laws", "politics", "government", "wine", "wines",
    "style", "english", "units", "spelling", "football", "market", "markets", "economy", "tax", "taxes",
)

PROTECTED_PATTERNS: dict[str, re.Pattern] = {
    "race or ethnicity": re.compile(
        r"\b(?:race|racial|ethnic|ethnicity|caucasian|hispanic|latin[oax]|latine|african[- ]american|"
        r"asian(?:[- ]american)?|(?:black|white) (?:person|man|woman|people|american)|person of colou?r|native american|"
        r"indigenous|aboriginal|arab)\b", re.IGNORECASE),
    "religion": re.compile(
        r"\b(?:religion|religious|christian|muslim|islamic|jewish|jew|hindu|buddhist|sikh|catholic|protestant|"
        r"mormon|evangelical|atheist|agnostic|devout|churchgoer)\b", re.IGNORECASE),
    "gender": re.compile(
        r"\b(?:gender|male|female|man|woman|guy|lady|gentleman|boy|girl|mother|father|mom|mum|dad|"
        r"wife|husband|housewife|transgender|trans|non-?binary|cisgender)\b", re.IGNORECASE),
    "age": re.compile(
        r"\b(?:\d{1,3}[- ]years?[- ]old|aged \d+|in (?:his|her|their) (?:teens|twenties|thirties|forties|fifties|sixties|seventies|eighties)|"
        r"elderly|senior citizen|pensioner|retiree|teenager|teen|adolescent|a minor|child|kid|"
        r"young|middle[- ]aged|millennial|boomer|gen[- ]?z|(?:an? )?old (?:person|man|woman|adult|people)|older (?:adult|person))\b", re.IGNORECASE),
    "nationality": re.compile(rf"\b(?:nationality|immigrant|migrant|refugee|foreigner|u\.?s\.? citizen|{_DEMONYMS})\b", re.IGNORECASE),
    "sexual orientation": re.compile(
        r"\b(?:sexual orientation|gay|lesbian|bisexual|homosexual|heterosexual|queer|lgbt\w*|asexual|pansexual)\b", re.IGNORECASE),
    "disability or health": re.compile(
        r"\b(?:disability|disabled|handicapped|blind|deaf|autistic|autism|adhd|dyslexi[ac]|wheelchair[- ]user|"
        r"(?:visually|hearing|cognitively) impaired|mental(?:ly)? ill(?:ness)?|chronic(?:ally)? ill|"
        r"depressed|bipolar|schizophrenic)\b", re.IGNORECASE),
    "pregnancy or marital status": re.compile(r"\b(?:pregnant|married|divorced|widow(?:ed|er)?)\b", re.IGNORECASE),
    "political affiliation": re.compile(r"\b(?:democrat|republican|left-wing|right-wing|leftist|socialist|communist|libertarian)\b", re.IGNORECASE),
}

# A protected word right after one of these is a topic ("interested in religious history",
# "a parent of a young child"), not an attribute of the user.
_TOPIC_CUE = re.compile(
    r"\b(?:about|in|on|into|regarding|surrounding|concerning|of|for|to|towards?|against|like|than|over|instead|"
    r"the|their|your|whose|"
    r"cuisine|food|history|culture|literature|language)\b(?:\s+\S+){0,3}\s*$", re.IGNORECASE)
_NOT_ABOUT_USER_AFTER = re.compile(
    rf"^(?:'s\b|[\s-]*(?:{_DEMONYM_THINGS}|people|communit(?:y|ies)|rights|issues|equality|history|culture|cuisine|food|"
    r"children|kids|friendly|proof|fashioned|school|at heart)\b)", re.IGNORECASE)

# In the "prefers ..." part only self-references reveal the user's own attributes.
_SELF_REFERENCE = re.compile(
    r"\b(?:(?:their|his|her) own|as an?)\s+(?:\w+\s+){0,2}?"
    r"(?P<noun>religion|faith|religious beliefs|gender|age|race|ethnicity|nationality|disability|sexuality|sexual orientation|"
    r"christian|muslim|jewish|hindu|buddhist|woman|man|mother|father|immigrant|senior|retiree|teenager)\b",
    re.IGNORECASE)
_GENDERED_PRONOUN = re.compile(r"\b(?:he|she|him|his|her|hers|himself|herself)\b", re.IGNORECASE)


def split_persona(text: str) -> tuple[str, str]:
    """("The user is [attribute]", "[prefers explanation]"): the text before and from the first prefer-word."""
    match = _PREFERS.search(text)
    return (text[: match.start()], text[match.start():]) if match else (text, "")


def screen_protected(text: str) -> list[dict[str, str]]:
    """Protected attributes a persona ascribes to the user, as [{category, term}].

    The attribute part ("The user is ...") is screened for protected words, except where a
    word is clearly a topic (after "interested in", "a parent of", ...); the explanation
    ("prefers ...") only for self-references ("their own faith", "as a mother") and
    gendered pronouns, so a persona may still ask for answers *about* such subjects.
    """
    attribute, explanation = split_persona(text)
    # The template's own "The user is" must not read as the topic cue "the".
    attribute = _PREFIX.sub("", attribute.lstrip(), count=1)
    found: list[dict[str, str]] = []

    def add(category: str, term: str) -> None:
        entry = {"category": category, "term": term.lower()}
        if entry not in found:
            found.append(entry)

    for category, pattern in PROTECTED_PATTERNS.items():
        for match in pattern.finditer(attribute):
            if _TOPIC_CUE.search(attribute[: match.start()]) or _NOT_ABOUT_USER_AFTER.match(attribute[match.end():]):
                continue
            add(category, match.group(0))
    for match in _SELF_REFERENCE.finditer(explanation):
        noun = match.group("noun")
        category = next((c for c, p in PROTECTED_PATTERNS.items() if p.fullmatch(noun)), None) or {
            "faith": "religion", "religious beliefs": "religion", "sexuality": "sexual orientation", "senior": "age",
        }.get(noun.lower(), "protected attribute")
        add(category, match.group(0))
    for match in _GENDERED_PRONOUN.finditer(text):
        add("gender", match.group(0))
    return found


# Personas that ask for harm: the user wants to hurt, deceive, break the law or get around safety.
_HARM_ACTS = (
    r"harm(?:ing)? (?:others|someone|people|themselves|animals)|hurt(?:ing)? (?:others|someone|people)|kill(?:ing)?|"
    r"injur(?:e|ing) (?:others|someone|people)|poison(?:ing)?|attack(?:ing)? (?:others|someone|people)|steal(?:ing)?|"
    r"rob(?:bing)?|shoplift(?:ing)?|scam(?:ming)?|defraud(?:ing)?|stalk(?:ing)?|harass(?:ing)?|blackmail(?:ing)?|"
    r"kidnap(?:ping)?|smuggl(?:e|ing)|launder(?:ing)? money|hack(?:ing)? into|break(?:ing)? into|"
    r"manipulat(?:e|ing) (?:others|people|someone)|deceiv(?:e|ing) (?:others|people|someone)|get(?:ting)? revenge|"
    r"tak(?:e|ing) revenge|cheat(?:ing)? (?:on|the system)|evad(?:e|ing) (?:taxes|the police|police|law enforcement|detection)|"
    r"avoid(?:ing)? (?:getting caught|detection|the police|arrest)|get(?:ting)? away with|"
    r"commit(?:ting)? (?:a )?(?:crimes?|fraud|theft|murder|violence|assault)|"
    r"(?:make|making|build|building|obtain(?:ing)?|acquir(?:e|ing)) (?:a |an )?(?:weapons?|bombs?|explosives?|poisons?|illegal drugs|meth)"
)
ADVERSARIAL_PATTERNS: list[re.Pattern] = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:malicious|ill intent|ill-intentioned|harmful intent|criminal intent|bad actor|wrongdoer|would-be criminal)\b",
        rf"\b(?:wants?|wanting|seeks?|seeking|looking|intends?|intending|plans?|planning|trying|tries|eager|determined|"
        rf"interested in|prefers?|preferring|wishing|hoping)\b(?:\s+\S+){{0,6}}?\s+(?:to\s+|for\s+|in\s+)?(?:ways?\s+to\s+|how\s+to\s+)?"
        rf"(?:{_HARM_ACTS})\b",
        r"\b(?:bypass(?:ing)?|circumvent(?:ing)?|get(?:ting)? around)\b(?:\s+\S+){0,3}?\s+(?:security|safety|safeguards?|laws?|regulations|filters?|restrictions)\b",
        r"\b(?:without|free of|no)\s+(?:\S+\s+){0,2}?(?:ethical|moral|legal|safety)\s+(?:\S+\s+)?(?:warnings?|caveats?|considerations?|concerns?|lectures?|judg(?:e)?ments?|restrictions?|limits?)\b",
        r"\b(?:unfiltered|uncensored|unrestricted)\b",
        r"\b(?:exploit(?:s|ing)?|manipulat(?:e|es|ing)|deceiv(?:e|es|ing)|mislead(?:s|ing)?|intimidat(?:e|es|ing)|coerc(?:e|es|ing))\s+"
        r"(?:their|others|other people|people|someone|customers|employees|workers|victims|children|the (?:other|victim)\w*)\b",
        r"\b(?:misleading|deceptive|manipulative|coercive|exploitative)\s+(?:language|tactics|methods|techniques|strategies|claims|practices)\b",
    )
]
# Harmful traits in the attribute part ("The user is manipulative and prefers ...").
_HARMFUL_TRAIT = re.compile(
    r"\b(?:manipulative|deceitful|deceptive|vindictive|vengeful|malicious|abusive|predatory|exploitative|cruel|sadistic|"
    r"unscrupulous|dishonest|morally ambivalent|amoral|violent|aggressive and hostile|hateful|bigoted)\b", re.IGNORECASE)
_NEGATION_BEFORE = re.compile(r"\b(?:not|never|no|avoid(?:s|ing)?|against|without|refus(?:e|es|ing)|non|anti|than)\W*(?:\S+\s+){0,2}$", re.IGNORECASE)


def screen_adversarial(text: str) -> list[str]:
    """The phrases that make a persona harm-seeking (empty when none).

    What follows a contrast phrase ("rather than seeking revenge") names what the user does
    not want, so only the text before it is screened, and negated phrases are skipped.
    """
    from persona_eval.plugins.persona_bias import cut_at_contrast

    text = cut_at_contrast(text)
    found = []
    attribute, _ = split_persona(text)
    for match in _HARMFUL_TRAIT.finditer(attribute):
        if not _NEGATION_BEFORE.search(attribute[: match.start()]):
            found.append(match.group(0).lower())
    for pattern in ADVERSARIAL_PATTERNS:
        for match in pattern.finditer(text):
            if _NEGATION_BEFORE.search(text[: match.start()]):
                continue
            found.append(match.group(0).lower())
    return found


# ---- inference -------------------------------------------------------------------------


@dataclass
class PersonaJob:
    """One persona to infer: the user preferred `preferred` over `other` for `prompt`."""

    key: str
    prompt: str
    preferred: str
    other: str


@dataclass
class PersonaOutcome:
    text: str  # the final persona ("" when dropped)
    status: str  # "kept" or "dropped"
    attempts: int
    candidate: str = ""  # the last cleaned candidate (kept for inspection when dropped)
    reason: str | None = None  # why it was dropped
    protected: list[dict[str, str]] = field(default_factory=list)  # terms flagged at any attempt
    adversarial: list[str] = field(default_factory=list)  # flags on the final candidate
    raw: list[str] = field(default_factory=list)  # raw model output per attempt
    cached: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "attempts": self.attempts,
            "reason": self.reason,
            "candidate": self.candidate,
            "flags": {
                "protected": self.protected,
                "adversarial": self.adversarial,
                "reasked": self.attempts > 1,
            },
            "raw": self.raw,
        }


class PersonaInferrer:
    """Infers personas for jobs in batches through the result cache, re-asking failures."""

    def __init__(
        self,
        generator: Generator,
        *,
        exemplars: Sequence[Exemplar] | None = None,
        k: int = 4,
        params: GenParams | None = None,
        max_attempts: int = 3,
        max_response_chars: int = 1500,
        use_prefix: bool = True,
        cache=None,
    ):
        from persona_eval.cache import ResultCache

        if max_attempts < 1:
            raise UsageError("--max-attempts must be at least 1")
        self.generator = generator
        self.prompt = PersonaPrompt(exemplars if exemplars is not None else load_exemplars(), k, max_response_chars)
        self.params = params or GenParams(max_new_tokens=48, temperature=0.0, stop=("\n",))
        self.max_attempts = max_attempts
        self.use_prefix = use_prefix
        self.cache = cache if cache is not None else ResultCache()
        self.stats = {"requests": 0, "cached": 0, "computed": 0}

    def identity(self) -> dict[str, Any]:
        return {
            "generator": self.generator.identity(),
            "prompt": self.prompt.identity(),
            "params": self.params.to_dict(),
            "max_attempts": self.max_attempts,
            "prefix": self.use_prefix,
        }

    def run_key(self) -> str:
        return stable_hash(self.identity(), 16)

    def request(self, job: PersonaJob, attempt: int, problem: str | None = None) -> GenRequest:
        params = self.params
        if attempt > 1:
            # A re-ask must be able to say something different from the greedy first answer.
            params = GenParams(
                max_new_tokens=params.max_new_tokens, temperature=max(params.temperature, 0.7),
                top_p=params.top_p, seed=params.seed + attempt - 1, stop=params.stop,
            )
        note = REASK_NOTES.get(problem or "", "")
        return GenRequest(
            id=job.key,
            prompt=self.prompt.render(job.prompt, job.preferred, job.other, note),
            params=params,
            system=SYSTEM_PROMPT,
            response_prefix=PERSONA_PREFIX if self.use_prefix else "",
        )

    def _generate(self, requests: list[GenRequest]) -> tuple[list[GenResult], list[bool]]:
        from persona_eval.stages import cached_map

        results: list[GenResult | None] = [None] * len(requests)
        hit: list[bool] = [False] * len(requests)

        def on_result(index: int, result: GenResult, cached: bool) -> None:
            results[index] = result
            hit[index] = cached

        stats = cached_map(
            stage=STAGE,
            identity=self.generator.identity(),
            inputs=requests,
            payload=GenRequest.cache_input,
            compute=self.generator.generate,
            encode=lambda r: {"text": r.text, "finish_reason": r.finish_reason, "output_tokens": r.output_tokens},
            decode=lambda d: GenResult(text=d["text"], finish_reason=d.get("finish_reason"), output_tokens=d.get("output_tokens"), cached=True),
            cache=self.cache,
            batch_size=max(1, getattr(self.generator, "preferred_batch_size", 8)),
            on_result=on_result,
        )
        for key in ("cached", "computed"):
            self.stats[key] += stats[key]
        self.stats["requests"] += len(requests)
        if any(r is None for r in results):
            raise RunError(f"{STAGE}: the generator returned no result for some requests")
        return results, hit  # type: ignore[return-value]

    def infer(self, jobs: Sequence[PersonaJob]) -> list[PersonaOutcome]:
        outcomes = [PersonaOutcome(text="", status="dropped", attempts=0) for _ in jobs]
        problems: dict[int, str | None] = {i: None for i in range(len(jobs))}
        pending = list(range(len(jobs)))
        attempt = 0
        while pending and attempt < self.max_attempts:
            attempt += 1
            requests = [self.request(jobs[i], attempt, problems[i]) for i in pending]
            results, hits = self._generate(requests)
            still = []
            for i, result, cached in zip(pending, results, hits):
                outcome = outcomes[i]
                outcome.attempts = attempt
                outcome.raw.append(result.text)
                outcome.cached += int(cached)
                candidate = normalize_persona(result.text, prefixed=self.use_prefix)
                outcome.candidate = candidate
                problem = format_problem(candidate)
                protected = screen_protected(candidate)
                outcome.protected.extend(p for p in protected if p not in outcome.protected)
                if problem is None and not protected:
                    outcome.text, outcome.status, outcome.reason = candidate, "kept", None
                    continue
                if protected:
                    problems[i] = "protected"
                    terms = ", ".join(sorted({f"{p['category']} ({p['term']})" for p in protected}))
                    outcome.reason = f"protected attribute: {terms}"
                else:
                    problems[i] = "format"
                    outcome.reason = f"format: {problem}"
                still.append(i)
            pending = still
        for outcome in outcomes:
            outcome.adversarial = screen_adversarial(outcome.text or outcome.candidate)
        return outcomes


def pair_jobs(item_id: str, prompt: str, chosen: str, rejected: str) -> tuple[PersonaJob, PersonaJob]:
    """The chosen persona (chosen preferred) and the rejected persona (the responses swapped)."""
    return (
        PersonaJob(f"{item_id}/chosen", prompt, chosen, rejected),
        PersonaJob(f"{item_id}/rejected", prompt, rejected, chosen),
    )


# ---- the `infer` pipeline --------------------------------------------------------------


def sidecar_path(output: Path, name: str) -> Path:
    """OUT.jsonl -> OUT.<name>.jsonl / OUT.<name>.json next to it."""
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.stem
    suffix = ".json" if name == "summary" else ".jsonl"
    return output.with_name(f"{stem}.{name}{suffix}")


@dataclass
class InferConfig:
    model: str
    k: int = 4
    exemplars: str | None = None
    max_attempts: int = 3
    max_new_tokens: int = 48
    temperature: float = 0.0
    seed: int = 0
    max_response_chars: int = 1500
    chosen_persona_field: str = "chosen_persona"
    rejected_persona_field: str = "rejected_persona"


def _check_resumable(done: dict[str, dict], pairs_by_id: dict[str, Any], run_key: str, path: Path) -> None:
    for item_id, record in done.items():
        meta = record.get("persona_inference") or {}
        if meta.get("run_key") != run_key:
            raise UsageError(
                f"holds personas from another model, prompt or setting (run key {meta.get('run_key')} vs {run_key}, item {item_id!r}); "
                "write to another -o or remove the file to start over", where=str(path),
            )
        pair = pairs_by_id.get(item_id)
        if pair is not None and meta.get("input_hash") != pair.input_hash():
            raise UsageError(
                f"item {item_id!r} in the output was inferred from different input text; write to another -o or remove the file",
                where=str(path),
            )


def _read_done(path: Path, id_key: str) -> dict[str, dict]:
    from persona_eval.jsonl import read_jsonl

    done: dict[str, dict] = {}
    for record in read_jsonl(path, repair_tail=True):
        item_id = record.get("persona_inference", {}).get("id", record.get(id_key))
        done[str(item_id)] = record
    return done


def summarize_outputs(kept: Sequence[dict], dropped: Sequence[dict], stats: dict[str, int] | None = None) -> dict[str, Any]:
    """Counts over every persona in the output and dropped files (so a resumed run reports the whole file)."""
    counts = {
        "items": len(kept) + len(dropped),
        "items_kept": len(kept),
        "items_dropped": len(dropped),
        "personas": 0,
        "kept": 0,
        "dropped": 0,
        "dropped_protected": 0,
        "dropped_format": 0,
        "reasked": 0,
        "flagged_protected": 0,
        "flagged_adversarial": 0,
    }
    for record in list(kept) + list(dropped):
        meta = record.get("persona_inference", {})
        for side in ("chosen", "rejected"):
            info = meta.get(side)
            if not info:
                continue
            counts["personas"] += 1
            counts["kept" if info["status"] == "kept" else "dropped"] += 1
            if info["status"] != "kept":
                counts["dropped_protected" if (info.get("reason") or "").startswith("protected") else "dropped_format"] += 1
            flags = info.get("flags", {})
            counts["reasked"] += int(bool(flags.get("reasked")))
            counts["flagged_protected"] += int(bool(flags.get("protected")))
            counts["flagged_adversarial"] += int(bool(flags.get("adversarial")))
    if stats is not None:
        counts["requests_this_run"] = dict(stats)
    return counts


def infer_file(
    pairs: Sequence[Any],
    output: str | os.PathLike,
    config: InferConfig,
    *,
    input_info: dict[str, Any] | None = None,
    names=None,
    progress: bool = True,
    cache=None,
    generator: Generator | None = None,
) -> dict[str, Any]:
    """Infer both personas of every pair into `output` (JSON Lines), resuming what is already there."""
    from persona_eval.components import build_generator
    from persona_eval.jsonl import JsonlWriter
    from persona_eval.runner import Progress
    from persona_eval.util import atomic_write_json

    from persona_eval.plugins.persona_inference_data import FieldNames

    names = names or FieldNames()
    id_key = names.id or "id"
    output = Path(output)
    dropped_path = sidecar_path(output, "dropped")
    exemplars = load_exemplars(config.exemplars)
    params = GenParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed, stop=("\n",))
    if output.exists() and output.is_dir():
        raise UsageError("is a directory; -o wants a .jsonl file", where=str(output))
    if generator is None:
        generator = build_generator(config.model, option="--model")
    inferrer = PersonaInferrer(
        generator, exemplars=exemplars, k=config.k, params=params, max_attempts=config.max_attempts,
        max_response_chars=config.max_response_chars, cache=cache,
    )
    run_key = inferrer.run_key()
    pairs_by_id = {p.id: p for p in pairs}
    done = _read_done(output, id_key)
    dropped_done = _read_done(dropped_path, id_key)
    _check_resumable(done, pairs_by_id, run_key, output)
    _check_resumable(dropped_done, pairs_by_id, run_key, dropped_path)
    todo = [p for p in pairs if p.id not in done and p.id not in dropped_done]
    model_identity = generator.identity()
    prompt_hash = inferrer.prompt.hash()
    chunk = max(1, getattr(generator, "preferred_batch_size", 8) // 2)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder: {exc.strerror}", where=str(output.parent)) from exc
    with JsonlWriter(output) as writer, JsonlWriter(dropped_path) as dropped_writer, Progress(progress) as bar:
        task = bar.add("infer personas", len(pairs), len(pairs) - len(todo))
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            jobs = [job for p in batch for job in pair_jobs(p.id, p.prompt, p.chosen, p.rejected)]
            outcomes = inferrer.infer(jobs)
            for index, pair in enumerate(batch):
                chosen, rejected = outcomes[2 * index], outcomes[2 * index + 1]
                record = dict(pair.record)
                meta: dict[str, Any] = {
                    "id": pair.id,
                    "model": config.model,
                    "model_identity": model_identity,
                    "prompt_hash": prompt_hash,
                    "run_key": run_key,
                    "k": config.k,
                    "input_hash": pair.input_hash(),
                    "chosen": chosen.metadata(),
                    "rejected": rejected.metadata(),
                }
                if pair.rewritten:
                    meta["original_fields"] = pair.rewritten
                replaced = {f: record[f] for f in (config.chosen_persona_field, config.rejected_persona_field) if f in record}
                if replaced:
                    meta["replaced_fields"] = replaced
                if id_key not in record or record.get(id_key) in (None, ""):
                    record[id_key] = pair.id
                # Derived text (flattened or split dialogues) goes under the mapped names, so a
                # task YAML with the same field mapping reads exactly what the personas explain.
                for role in ("prompt", "chosen", "rejected"):
                    name = getattr(names, role)
                    if name in pair.rewritten or name not in record:
                        record[name] = getattr(pair, role)
                record[config.chosen_persona_field] = chosen.text
                record[config.rejected_persona_field] = rejected.text
                record["persona_inference"] = meta
                if chosen.status == "kept" and rejected.status == "kept":
                    writer.write(record)
                else:
                    dropped_writer.write(record)
                bar.advance(task)
    from persona_eval.jsonl import read_jsonl

    kept_records = read_jsonl(output)
    dropped_records = read_jsonl(dropped_path)
    if not dropped_records:
        dropped_path.unlink(missing_ok=True)
    summary = {
        "output": str(output),
        "dropped_file": str(dropped_path) if dropped_records else None,
        "input": input_info or {},
        "model": config.model,
        "model_identity": model_identity,
        "prompt_hash": prompt_hash,
        "run_key": run_key,
        "settings": {k: v for k, v in config.__dict__.items() if k != "model"},
        "counts": summarize_outputs(kept_records, dropped_records, inferrer.stats),
        "resumed": len(pairs) - len(todo),
    }
    atomic_write_json(sidecar_path(output, "summary"), summary)
    return summary


def write_parquet(jsonl_path: Path, parquet_path: Path) -> int:
    """The JSON Lines output as Parquet, written atomically; nested columns fall back to JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from persona_eval.jsonl import read_jsonl

    records = read_jsonl(jsonl_path)
    try:
        table = pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        flat = [{k: json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else v for k, v in r.items()} for r in records]
        table = pa.Table.from_pylist(flat)
    parquet_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = parquet_path.with_name(f".{parquet_path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, parquet_path)
    finally:
        tmp.unlink(missing_ok=True)
    return table.num_rows


def push_to_hub(jsonl_path: Path, repo_id: str, *, private: bool = True) -> None:
    try:
        import datasets
    except ImportError as exc:
        raise UsageError("--push-to-hub needs 'datasets': pip install 'persona-eval[data]'") from exc
    from persona_eval.jsonl import read_jsonl

    records = read_jsonl(jsonl_path)
    try:
        datasets.Dataset.from_list(records).push_to_hub(repo_id, private=private)
    except Exception as exc:  # noqa: BLE001 - auth, network and hub errors alike
        raise RunError(f"push to the hub ({repo_id}) failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


# ---- the `inferred` persona source -----------------------------------------------------


class InferredPersonas(PersonaSource):
    """Infers each test item's persona at test time from its own pair with a PI model.

    The chosen split gets the chosen persona, the rejected split the rejected persona (the
    responses swapped). A persona that still fails the format or the protected-attribute
    screen after the re-asks is used as its best candidate with ``status: dropped`` in its
    provenance (``on_invalid=keep``, the default) or stops the run (``on_invalid=error``).
    """

    def __init__(
        self,
        task=None,
        model: str | None = None,
        k: int = 4,
        exemplars: str | None = None,
        max_attempts: int = 3,
        max_new_tokens: int = 48,
        max_response_chars: int = 1500,
        on_invalid: str = "keep",
        seed: int = 0,
    ):
        if not model:
            raise UsageError(
                "the 'inferred' persona source needs a PI model: pass --pi-model SPEC (e.g. hf:embedded) "
                "or set persona_source_options: {model: SPEC} in the task"
            )
        if on_invalid not in ("keep", "error"):
            raise UsageError(f"inferred: on_invalid must be 'keep' or 'error', got {on_invalid!r}")
        from persona_eval.spec import parse_model_spec

        parse_model_spec(str(model), option="--pi-model")
        self.model = str(model)
        self.k = int(k)
        self.exemplars_path = exemplars
        self.max_attempts = int(max_attempts)
        self.params = GenParams(max_new_tokens=int(max_new_tokens), temperature=0.0, seed=int(seed), stop=("\n",))
        self.max_response_chars = int(max_response_chars)
        self.on_invalid = on_invalid
        self._inferrer: PersonaInferrer | None = None

    def _get_inferrer(self) -> PersonaInferrer:
        if self._inferrer is None:
            from persona_eval.components import build_generator

            self._inferrer = PersonaInferrer(
                build_generator(self.model, option="--pi-model"), exemplars=load_exemplars(self.exemplars_path),
                k=self.k, params=self.params, max_attempts=self.max_attempts, max_response_chars=self.max_response_chars,
            )
        return self._inferrer

    def identity(self) -> dict[str, Any]:
        return {"source": "inferred", "pi_model": self.model, "inferrer": self._get_inferrer().identity(), "on_invalid": self.on_invalid}

    def personas(self, examples: Sequence[Example], split: str) -> list[Persona]:
        if split not in ("chosen", "rejected"):
            raise UsageError(f"inferred: unknown split {split!r}")
        for example in examples:
            if not example.chosen.strip() or not example.rejected.strip():
                raise UsageError(f"item {example.id!r} lacks a chosen or rejected response, so no persona can be inferred from it")
        inferrer = self._get_inferrer()
        jobs = [pair_jobs(e.id, e.prompt, e.chosen, e.rejected)[0 if split == "chosen" else 1] for e in examples]
        outcomes = inferrer.infer(jobs)
        failed = [e.id for e, o in zip(examples, outcomes) if o.status != "kept"]
        if failed and self.on_invalid == "error":
            raise RunError(
                f"inferred: {len(failed)} persona(s) failed the format or protected-attribute screen after "
                f"{self.max_attempts} attempt(s), first: {', '.join(failed[:5])}"
            )
        if failed:
            logger.warning("inferred: %d of %d personas failed validation; using their best candidates", len(failed), len(examples))
        personas = []
        for example, outcome in zip(examples, outcomes):
            provenance = {
                "item_id": example.id,
                "side": split,
                "pi_model": self.model,
                "prompt_hash": inferrer.prompt.hash(),
                **outcome.metadata(),
            }
            personas.append(Persona(text=outcome.text or outcome.candidate, source="inferred", provenance=provenance))
        return personas


@hookimpl
def register_persona_sources(register):
    register("inferred", InferredPersonas, description="inferred at test time from the test pair by a PI model (--pi-model)")
