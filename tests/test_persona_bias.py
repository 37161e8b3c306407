"""Persona bias analysis: tokenising, P(chosen | word), the report files, and the known BeaverTails pattern on real data."""

from __future__ import annotations

import json
from pathlib import Path

import cli_support
import pytest

from persona_eval.errors import UsageError
from persona_eval.persona_inference import bias as pb

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str):
    return cli_support.cli(*args, timeout=300)


def test_cut_at_contrast_and_words():
    text = "The user is practical and prefers concise answers rather than detailed explanations."
    assert pb.cut_at_contrast(text) == "The user is practical and prefers concise answers "
    assert pb.words_of(text) == {"practical", "concise", "answers"}
    assert "detailed" in pb.words_of(text, cut_contrast=False)
    assert pb.words_of("The user prefers depth over breadth.") == {"depth"}
    assert pb.words_of("An overview, instead of lists", cut_contrast=True) == {"overview"}
    assert pb.words_of("Prefers step-by-step guides", lemmas=True) == {"step-by-step", "guide"}


@pytest.mark.parametrize("word, lemma", [("answers", "answer"), ("strategies", "strategy"), ("approaches", "approach"),
                                         ("prefers", "prefer"), ("business", "business"), ("various", "various"),
                                         ("analysis", "analysis"), ("detailed", "detailed"), ("gas", "gas")])
def test_lemmatize(word, lemma):
    assert pb.lemmatize(word) == lemma


def test_word_bias_probabilities_and_min_count():
    chosen = ["The user is careful and prefers detailed steps."] * 3 + ["The user is busy and prefers short steps."]
    rejected = ["The user is busy and prefers short answers."] * 3 + ["The user is careful and prefers short lists."]
    stats = {s.word: s for s in pb.word_bias(chosen, rejected, min_count=2)}
    assert stats["detailed"].p_chosen == 1.0 and (stats["detailed"].chosen, stats["detailed"].rejected) == (3, 0)
    assert stats["careful"].p_chosen == pytest.approx(3 / 4)
    assert stats["short"].p_chosen == pytest.approx(1 / 5)
    assert stats["steps"].p_chosen == 1.0 and "lists" not in stats  # one persona only: under min_count
    # Unequal side sizes are equalised: a word in every persona of both sides is exactly 0.5.
    stats = {s.word: s for s in pb.word_bias(["The user is calm and prefers tea."] * 2, ["The user is calm and prefers coffee."] * 6, min_count=1)}
    assert stats["calm"].p_chosen == pytest.approx(0.5)
    with pytest.raises(UsageError):
        pb.word_bias([], ["x"])


def test_report_files(tmp_path):
    chosen = [f"The user is curious and prefers thorough explanations of topic {i}." for i in "abcd"]
    rejected = [f"The user is hurried and prefers brief answers about topic {i}." for i in "abcd"]
    report = pb.bias_report(chosen, rejected, min_count=2, top=3, source={"test": True})
    assert [w["word"] for w in report["top_chosen"]] == ["curious", "explanations", "thorough"]
    assert [w["word"] for w in report["top_rejected"]] == ["answers", "brief", "hurried"]
    files = pb.write_report(report, tmp_path / "out")
    assert Path(files["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(files["json"]).read_text())["top_chosen"][0]["p_chosen"] == 1.0
    markdown = Path(files["markdown"]).read_text()
    assert "| thorough | 1.000 | 4 | 0 |" in markdown and "## Words of rejected personas" in markdown


def test_persona_from_prompt():
    assert pb.persona_from_prompt("Prompt: Hi?\nPersona: The user is x and prefers y.\nResponse:") == "The user is x and prefers y."
    assert pb.persona_from_prompt("Prompt: Hi? I am x\nResponse:") is None


def test_paper_outputs_errors(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "pt_dpo__gold-chosen.json").write_text(json.dumps([{"prompt": "Prompt: a\nPersona: The user is x and prefers y.\nResponse:"}]))
    (folder / "pt_dpo__gold-rejected.json").write_text(json.dumps([{"prompt": "Prompt: a\nResponse:"}]))
    with pytest.raises(UsageError, match=r"pt_dpo__gold-rejected\.json\[0\]: no 'Persona: \.\.\.' line"):
        pb.paper_personas(tmp_path, "ds")
    result = cli("analyze", "--paper-outputs", str(tmp_path), "--dataset", "ds")
    assert result.returncode == 2 and "gold-rejected.json[0]" in result.stderr
    result = cli("analyze", "--paper-outputs", str(tmp_path), "--dataset", "nope")
    assert result.returncode == 2 and "no pt_dpo__gold-chosen.json here" in result.stderr


def test_analyze_a_task_and_a_persona_file(tmp_path):
    from_task = cli("analyze", "demo", "--partition", "train", "--min-count", "4", "--json")
    assert from_task.returncode == 0, from_task.stderr
    report = json.loads(from_task.stdout)
    # The demo's 48 training pairs repeat some personas: each distinct one counts once.
    assert report["personas_given"] == {"chosen": 48, "rejected": 48}
    assert report["personas"]["rejected"] == 48 - report["duplicates_removed"]["rejected"] < 48
    # The demo's rejected personas are the phone readers and the tight budgets.
    rejected_words = {w["word"] for w in report["top_rejected"]}
    assert {"short", "budget"} <= rejected_words
    from_file = cli("analyze", str(REPO / "tasks" / "demo" / "data" / "train.jsonl"), "--min-count", "4", "--json")
    assert json.loads(from_file.stdout)["top_rejected"] == report["top_rejected"]


def test_beavertails_persona_bias(paper_outputs, tmp_path):
    """The paper's BeaverTails personas: chosen ones ask for depth, rejected ones for brevity."""
    result = cli("analyze", "--paper-outputs", str(paper_outputs), "--dataset", "beavertails", "--top", "40",
                 "-o", str(tmp_path / "bias"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["personas_given"] == {"chosen": 499, "rejected": 499}
    assert report["personas"] == {"chosen": 497, "rejected": 499}  # two chosen personas occur twice
    words = {w["word"]: w for w in json.loads((tmp_path / "bias" / "persona_bias.json").read_text())["words"]}
    chosen_top = {w["word"] for w in report["top_chosen"]}
    rejected_top = {w["word"] for w in report["top_rejected"]}
    depth = [w for w in ("detailed", "thorough", "comprehensive") if w in words and words[w]["p_chosen"] > 0.5 and w in chosen_top]
    brevity = [w for w in ("concise", "simple", "straightforward") if w in words and words[w]["p_chosen"] < 0.5 and w in rejected_top]
    assert len(depth) >= 2, {w: words.get(w) for w in ("detailed", "thorough", "comprehensive")}
    assert len(brevity) >= 2, {w: words.get(w) for w in ("concise", "simple", "straightforward")}
    assert (tmp_path / "bias" / "persona_bias.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Words of chosen personas" in (tmp_path / "bias" / "persona_bias.md").read_text()


def test_contrast_cut_matters_on_beavertails(paper_outputs):
    """Without the cut, 'rather than detailed explanations' in rejected personas hides the chosen side's 'detailed'."""
    chosen, rejected = pb.paper_personas(paper_outputs, "beavertails")
    cut = {s.word: s.p_chosen for s in pb.word_bias(chosen, rejected, cut_contrast=True)}
    uncut = {s.word: s.p_chosen for s in pb.word_bias(chosen, rejected, cut_contrast=False)}
    assert cut["detailed"] > 0.5 > uncut["detailed"]
