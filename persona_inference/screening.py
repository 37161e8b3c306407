"""Post-processing of inferred personas: cleaning, the format check and two screens.

`normalize_persona` cuts a model output to its first line (as the paper did; or its first
sentence) and tidies it; `format_problem`
says why a text is not of the form "The user is [attribute] and prefers [explanation]".
`screen_protected` finds protected attributes a persona ascribes to the user (not topics it asks
about); such a persona is re-asked and, after the last attempt, dropped. `screen_adversarial`
flags a harm-seeking persona; the flag is recorded, the persona is not dropped for it.
"""

from __future__ import annotations

import re

PERSONA_PREFIX = "The user is"

_ABBREVIATIONS = re.compile(r"\b(e\.g|i\.e|etc|vs|mr|mrs|ms|dr|st|approx|incl|u\.s)\.$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:persona|answer|output)\s*(?:\*\*)?\s*:\s*", re.IGNORECASE)
_PREFIX = re.compile(r"^the user is\b", re.IGNORECASE)
_PREFERS = re.compile(r"\bprefer(?:s|ring|red)?\b", re.IGNORECASE)


def first_line(text: str) -> str:
    """The first non-empty line, stripped: the paper's ``raw_text.strip().split('\\n')[0].strip()``."""
    return next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")


def first_sentence(text: str) -> str:
    """The first sentence of the first non-empty line (abbreviations such as 'e.g.' do not end it)."""
    line = first_line(text)
    for match in _SENTENCE_END.finditer(line):
        if not _ABBREVIATIONS.search(line[: match.end()]):
            return line[: match.end()].strip()
    return line


def normalize_persona(text: str, *, prefixed: bool = False, cut: str = "line") -> str:
    """Clean one model output into a single persona.

    ``prefixed`` means the request forced the reply to begin with "The user is", so the
    generated text is its continuation. ``cut`` keeps the first ``line`` (the paper's cut)
    or only the first ``sentence`` of it.
    """
    if cut not in ("line", "sentence"):
        raise ValueError(f"cut must be 'line' or 'sentence', got {cut!r}")
    text = text.replace("\r", "")
    text = text.strip()
    if prefixed and not _PREFIX.match(_LABEL.sub("", text.lstrip("*\"' "))):
        text = f"{PERSONA_PREFIX} {text}"
    text = _LABEL.sub("", text.strip())
    text = first_sentence(text) if cut == "sentence" else first_line(text)
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
    from persona_eval.persona_inference.bias import cut_at_contrast

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

