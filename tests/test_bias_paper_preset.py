"""`analyze`: duplicates counted once, `--preset paper` (the settings of the paper's word_saliency.py,
checked against its code and against NLTK itself), and the stability table across cut-offs.
Real personas come from ../shared/data/paper-outputs (read in place; skipped where absent)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import warnings
from collections import Counter
from pathlib import Path

import cli_support
import pytest
from paper_repo_support import paper_file

from persona_eval.errors import UsageError
from persona_eval.persona_inference import bias as pb
from persona_eval.persona_inference import wordnet as wn


def cli(*args: str):
    return cli_support.cli(*args, timeout=300)


def _key(persona: str) -> str:
    return " ".join(persona.split()).casefold()


def _wordnet_folder() -> Path:
    folder = next((f for f in wn.database_folders() if (f / "index.noun").is_file()), None)
    if folder is None:
        pytest.skip("no WordNet database here (apt-get install wordnet-base, or set WNSEARCHDIR)")
    return folder


@pytest.fixture(scope="module")
def nltk_lemmatizer(tmp_path_factory):
    """NLTK's own WordNetLemmatizer: over nltk_data where installed, else over this machine's
    WordNet database laid out as nltk_data (the lemmatiser reads only the index and exception files)."""
    nltk = pytest.importorskip("nltk")
    from nltk.stem import WordNetLemmatizer

    root = None
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        folder = _wordnet_folder()
        root = tmp_path_factory.mktemp("nltk_data")
        target = root / "corpora" / "wordnet"
        target.mkdir(parents=True)
        for name in ("index.noun", "index.verb", "index.adj", "index.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc", "data.adj"):
            shutil.copy(folder / name, target / name)
        (target / "lexnames").write_text("".join(f"{i:02d}\tlexname.{i}\t0\n" for i in range(45)))
        (target / "index.sense").write_text("")
        nltk.data.path.insert(0, str(root))
    lemmatizer = WordNetLemmatizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed here
        lemmatizer.lemmatize("dogs")
    yield lemmatizer.lemmatize
    if root is not None:
        nltk.data.path.remove(str(root))
    wn.wordnet_lemmatizer.cache_clear()


# ---- duplicates ------------------------------------------------------------------------


def test_duplicates_count_once_unless_kept():
    chosen = ["The user is thorough and prefers detailed guides."] * 5 + ["The user is curious and prefers examples."]
    rejected = ["The user is busy and prefers short answers.", "the user is  busy and prefers short answers.",
                "The user is calm and prefers examples."]
    report = pb.bias_report(chosen, rejected, min_count=1)
    assert report["personas"] == {"chosen": 2, "rejected": 2} and report["duplicates_removed"] == {"chosen": 4, "rejected": 1}
    words = {w["word"]: w for w in report["words"]}
    assert (words["detailed"]["chosen"], words["short"]["rejected"]) == (1, 1)
    kept = pb.bias_report(chosen, rejected, min_count=1, keep_duplicates=True)
    words = {w["word"]: w for w in kept["words"]}
    assert kept["personas"] == {"chosen": 6, "rejected": 3} and (words["detailed"]["chosen"], words["short"]["rejected"]) == (5, 2)
    assert "identical personas counted once (4 chosen and 1 rejected duplicates left out)" in pb.render_markdown(report)


def test_retrieved_personas_count_each_distinct_persona_once(paper_outputs):
    chosen, rejected = pb.paper_personas(paper_outputs, "hhh", kind="retr")
    distinct = {"chosen": len({_key(p) for p in chosen}), "rejected": len({_key(p) for p in rejected})}
    assert distinct["chosen"] < 400 and distinct["rejected"] < 400  # 500 retrieved personas per side, many repeated
    report = json.loads(cli("analyze", "--paper-outputs", str(paper_outputs), "--dataset", "hhh", "--kind", "retr", "--json").stdout)
    assert report["personas"] == distinct and report["personas_given"] == {"chosen": 500, "rejected": 500}
    # Each count is now the number of distinct personas holding the word.
    unique_chosen = list({_key(p): p for p in chosen}.values())
    for w in report["top_chosen"][:5]:
        assert w["chosen"] == sum(w["word"] in pb.words_of(p) for p in unique_chosen)
    kept = json.loads(cli("analyze", "--paper-outputs", str(paper_outputs), "--dataset", "hhh", "--kind", "retr",
                          "--keep-duplicates", "--json").stdout)
    assert kept["personas"] == {"chosen": 500, "rejected": 500} and kept["settings"]["keep_duplicates"] is True
    # With duplicates, some listed word's count comes from far fewer distinct personas than it says.
    inflated = [w for w in kept["top_chosen"] + kept["top_rejected"]
                if w["chosen"] + w["rejected"] >= 1.5 * len({_key(p) for p in chosen + rejected if w["word"] in pb.words_of(p)})]
    assert inflated, "expected a top word inflated by repeated retrieved personas"


# ---- the paper's settings --------------------------------------------------------------


def test_paper_preset_settings():
    s = pb.settings_for("paper")
    assert (s.min_count, s.top, s.contrast_phrases, s.contrast_match) == (3, 10, ("rather than", "over", "versus", "compared to", "instead of"), "substring")
    assert (s.first_sentence, s.tokenizer, s.lemmatizer, s.stopwords, s.unit, s.statistic, s.ties, s.keep_duplicates) == (
        True, "treebank", "wordnet", False, "token", "share", "first_seen", True)
    ours = pb.settings_for("ours")
    assert (ours.min_count, ours.top, ours.lemmatizer, ours.unit, ours.keep_duplicates) == (10, 15, "none", "persona", False)
    assert {"versus", "compared to"} <= set(ours.contrast_phrases)
    assert pb.words_of("The user prefers depth versus breadth") == pb.words_of("The user prefers depth compared to breadth") == {"depth"}
    assert pb.settings_for("paper", min_count=5, keep_duplicates=False).min_count == 5
    with pytest.raises(UsageError, match="unknown --preset"):
        pb.settings_for("nope")


def test_paper_preset_is_word_saliency_py():
    source = paper_file("persona_inference/evaluation/word_saliency.py")
    assert int(re.search(r"^FREQUENCY_CUTOFF = (\d+)", source, re.MULTILINE).group(1)) == pb.settings_for("paper").min_count
    split_words = ast.literal_eval(re.search(r"^split_words = (\[.*\])", source, re.MULTILINE).group(1))
    assert tuple(split_words) == pb.PAPER_CONTRAST_PHRASES
    assert "persona = persona.split(sw)[0]" in source  # plain substrings, in order
    assert "nltk.sent_tokenize(p.lower())[0]" in source and "nltk.word_tokenize(persona)" in source
    assert "w.lower().replace(',', '').replace('.', '').replace(\"'\", '')" in source
    assert "WordNetLemmatizer()" in source and "lemmatizer.lemmatize(w_)" in source  # default part of speech: noun
    assert "word_ctr[w] = word_ctr.get(w, 0) + 1" in source  # every token, not once per persona
    assert "if ct < FREQUENCY_CUTOFF:" in source and "/ word_ctr[w]" in source  # share of the word's tokens
    assert "sorted(p_label_given_word_chosen, key=lambda item: -1 * item[1])" in source and "[:10]" in source


def test_paper_preset_quirks_substring_cut_and_token_counts():
    # 'over' as a substring also cuts 'overall'; ours cuts whole words only.
    assert pb.cut_at_contrast("the user prefers an overall plan", pb.PAPER_CONTRAST_PHRASES, match="substring") == "the user prefers an "
    assert pb.cut_at_contrast("the user prefers an overall plan") == "the user prefers an overall plan"
    pytest.importorskip("nltk")
    paper = pb.settings_for("paper", lemmatizer="none")
    pipeline = pb._Pipeline(paper)
    assert pipeline.tokens("The user is a doer, who doesn't wait, and prefers steps. Second sentence here.") == [
        "the", "user", "is", "a", "doer", "who", "does", "nt", "wait", "and", "prefers", "steps"]
    stats = {s.word: s for s in pb.word_bias(["The user is kind and kind and prefers tea."] * 2, ["The user is kind and prefers coffee."],
                                             settings=replace_min(paper, 1))}
    assert (stats["kind"].chosen, stats["kind"].rejected) == (4, 1) and stats["kind"].p_chosen == pytest.approx(0.8)


def replace_min(settings, n):
    from dataclasses import replace

    return replace(settings, min_count=n)


def test_our_wordnet_reader_is_nltks_lemmatizer(nltk_lemmatizer, paper_outputs):
    """Every token of the paper's released personas lemmatises as NLTK's WordNetLemmatizer does."""
    from nltk.tokenize import NLTKWordTokenizer

    ours = wn._read_database(_wordnet_folder())
    tokens = {"us", "was", "is", "has", "glasses", "geese", "wolves", "abaci", "boxes", "ladies", "men", ""}
    tokenizer = NLTKWordTokenizer()
    for dataset in ("beavertails", "hhh"):
        chosen, rejected = pb.paper_personas(paper_outputs, dataset)
        for persona in chosen + rejected:
            tokens.update(t.replace(",", "").replace(".", "").replace("'", "") for t in tokenizer.tokenize(persona.lower()))
    assert len(tokens) > 2000
    different = {t: (nltk_lemmatizer(t), ours.lemmatize(t)) for t in tokens if nltk_lemmatizer(t) != ours.lemmatize(t)}
    assert different == {}
    assert sum(ours.lemmatize(t) != t for t in tokens) > 300  # and it does change words


def test_paper_preset_reproduces_an_independent_count(nltk_lemmatizer, paper_outputs):
    """The paper's procedure, counted independently with NLTK's tokenizer and lemmatiser, gives our `--preset paper` report."""
    from nltk.tokenize import NLTKWordTokenizer

    chosen, rejected = pb.paper_personas(paper_outputs, "beavertails")
    assert not any(re.search(r"[.!?]\s+\S", p) for p in chosen + rejected)  # one sentence each: the sentence step is moot here
    tokenizer = NLTKWordTokenizer()
    per_side: dict[str, Counter] = {"chosen": Counter(), "rejected": Counter()}
    order: dict[str, None] = {}
    for side, personas in (("chosen", chosen), ("rejected", rejected)):
        for persona in personas:
            text = persona.lower()
            for phrase in ("rather than", "over", "versus", "compared to", "instead of"):
                text = text.partition(phrase)[0]
            for token in tokenizer.tokenize(text):
                word = nltk_lemmatizer(re.sub(r"[,.']", "", token))
                if word:
                    per_side[side][word] += 1
                    order.setdefault(word)
    total = {w: per_side["chosen"][w] + per_side["rejected"][w] for w in order}
    kept = [w for w in order if total[w] >= 3]
    by_chosen = sorted(kept, key=lambda w: -per_side["chosen"][w] / total[w])
    by_rejected = sorted(kept, key=lambda w: -per_side["rejected"][w] / total[w])

    report = pb.bias_report(chosen, rejected, preset="paper")
    assert report["personas"] == {"chosen": 499, "rejected": 499}  # the paper counts every line
    assert [w["word"] for w in report["words"]] == by_chosen
    assert [(w["chosen"], w["rejected"]) for w in report["words"]] == [(per_side["chosen"][w], per_side["rejected"][w]) for w in by_chosen]
    assert [w["word"] for w in report["top_chosen"]] == by_chosen[:10]
    assert [w["word"] for w in report["top_rejected"]] == by_rejected[:10]
    assert "wordnet" in report["settings"]["backends"]["lemmatizer"]


def test_paper_preset_without_wordnet_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(wn, "_nltk_lemmatizer", lambda: None)
    monkeypatch.setattr(wn, "database_folders", lambda: [])
    wn.wordnet_lemmatizer.cache_clear()
    try:
        with pytest.raises(UsageError, match="wordnet-base"):
            pb.bias_report(["The user is a and prefers b."], ["The user is c and prefers d."], preset="paper")
    finally:
        wn.wordnet_lemmatizer.cache_clear()


# ---- stability across cut-offs ---------------------------------------------------------


def test_stability_table_on_real_personas(paper_outputs, tmp_path):
    result = cli("analyze", "--paper-outputs", str(paper_outputs), "--dataset", "beavertails", "--json", "-o", str(tmp_path / "bias"), "--no-chart")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    table = report["stability"]
    assert table["cutoffs"] == [3, 5, 10, 20] and table["top"] == 10
    chosen, rejected = pb.paper_personas(paper_outputs, "beavertails")
    columns = {}
    for cutoff in (3, 5, 10, 20):
        alone = pb.bias_report(chosen, rejected, min_count=cutoff, top=10)
        columns[cutoff] = [w["word"] for w in table["chosen"][str(cutoff)]]
        assert columns[cutoff] == [w["word"] for w in alone["top_chosen"]]
        assert [w["word"] for w in table["rejected"][str(cutoff)]] == [w["word"] for w in alone["top_rejected"]]
    assert table["in_every_cutoff"]["chosen"] == [w for w in columns[3] if all(w in columns[c] for c in (5, 10, 20))]
    assert columns[3] != columns[20]  # on these personas the top 10 does move with the cut-off
    markdown = (tmp_path / "bias" / "persona_bias.md").read_text()
    assert "## Stability across cut-offs" in markdown
    assert "| rank | min-count 3 | min-count 5 | min-count 10 | min-count 20 |" in markdown
    first = table["chosen"]["3"][0]
    assert f"| 1 | {'**' + first['word'] + '**' if first['word'] in table['in_every_cutoff']['chosen'] else first['word']} ({first['chosen']}/{first['rejected']})" in markdown


def test_cutoffs_and_lemmatizer_options(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"chosen_persona": f"The user is careful {i} and prefers depth.",
                                        "rejected_persona": f"The user is busy {i} and prefers brevity."}) + "\n" for i in "abcdef"))
    result = cli("analyze", str(data), "--cutoffs", "2, 4", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stability"]["cutoffs"] == [2, 4]
    for bad in ("0", "3,x", ""):
        result = cli("analyze", str(data), "--cutoffs", bad)
        assert result.returncode == 2 and "--cutoffs" in result.stderr and result.stderr.strip().count("\n") == 0
    result = cli("analyze", str(data), "--lemmatize", "--lemmatizer", "wordnet")
    assert result.returncode == 2 and "contradicts" in result.stderr
    lemmas = json.loads(cli("analyze", str(data), "--lemmatize", "--min-count", "1", "--json").stdout)
    assert lemmas["settings"]["lemmatizer"] == "suffix" and lemmas["settings"]["lemmatize"] is True
