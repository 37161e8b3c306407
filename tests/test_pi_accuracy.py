"""PI accuracy: answer parsing, the score (both orders, per side, standard error), judges by text and by log-probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import pytest
from cli_support import cli, invoke

from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenRequest, GenResult
from persona_eval.persona_inference import accuracy as pia
from persona_eval.storage.cache import NullCache, ResultCache

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "text, choice",
    [("A", "A"), ("B.", "B"), ("Answer: B", "B"), ("(A) because it is longer", "A"), ("Response B is better.", "B"),
     ("I would pick response a", "A"), ("The user prefers Response A over Response B", None), ("Both are fine", None),
     ("A good answer is Response B", "B"), ("", None), ("Apples", None)],
)
def test_parse_choice(text, choice):
    assert pia.parse_choice(text) == choice


def _record(item, side, order, choice, prob_a=None):
    return {"item_id": item, "side": side, "order": order, "choice": choice, "prob_a": prob_a}


def test_score_means_over_both_orders_with_standard_error():
    records = [
        # item 1: right in both orders; item 2: right once; item 3: wrong twice; item 4: one unparseable, one right.
        _record("1", "chosen", "target_first", "A"), _record("1", "chosen", "target_second", "B"),
        _record("2", "chosen", "target_first", "A"), _record("2", "chosen", "target_second", "A"),
        _record("3", "chosen", "target_first", "B"), _record("3", "chosen", "target_second", "A"),
        _record("4", "chosen", "target_first", None), _record("4", "chosen", "target_second", "B"),
        _record("1", "rejected", "target_first", "A"), _record("1", "rejected", "target_second", "A"),
    ]
    report = pia.score(records)
    chosen = report["chosen"]
    means = [1.0, 0.5, 0.0, 1.0]
    mean = sum(means) / 4
    se = math.sqrt(sum((m - mean) ** 2 for m in means) / 3 / 4)
    assert chosen["accuracy"] == pytest.approx(mean) and chosen["stderr"] == pytest.approx(se)
    assert chosen["unparseable"] == 1 and chosen["unparseable_share"] == pytest.approx(1 / 8)
    assert chosen["accuracy_by_order"] == {"target_first": pytest.approx(2 / 3), "target_second": pytest.approx(2 / 4)}
    assert chosen["first_position_share"] == pytest.approx(4 / 7)
    # Always answering "A" is exactly chance.
    assert report["rejected"]["accuracy"] == 0.5 and report["rejected"]["stderr"] is None
    assert report["chance"] == 0.5


def test_score_with_probabilities():
    records = [_record("1", "chosen", "target_first", "A", 0.8), _record("1", "chosen", "target_second", "A", 0.6)]
    entry = pia.score(records)["chosen"]
    assert entry["mean_prob_target"] == pytest.approx((0.8 + 0.4) / 2)


ITEMS = [
    pia.PIItem(str(i), f"Question {i}?", f"A long detailed answer number {i} with reasons.", f"Short {i}.",
               "The user is a careful learner and prefers detailed answers.", "The user is busy and prefers short answers.")
    for i in range(4)
]


class KeywordJudge(Generator):
    """Picks the response that matches the persona's 'detailed'/'short' wish; `flip` inverts it, `fixed` always answers one letter."""

    def __init__(self, flip=False, fixed=None):
        self.flip, self.fixed, self.calls = flip, fixed, 0

    def identity(self):
        return {"backend": "keyword", "flip": self.flip, "fixed": self.fixed}

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        out = []
        for r in requests:
            self.calls += 1
            if self.fixed:
                out.append(GenResult(text=self.fixed))
                continue
            a = r.prompt.split("Response A:")[1].split("Response B:")[0]
            wants_long = "detailed" in r.prompt.split("Persona:")[1].split("\n")[0]
            pick = "A" if ("long detailed" in a) == wants_long else "B"
            if self.flip:
                pick = "B" if pick == "A" else "A"
            out.append(GenResult(text=f"Response {pick}"))
        return out


@pytest.mark.parametrize("judge, expected", [(KeywordJudge(), 1.0), (KeywordJudge(flip=True), 0.0), (KeywordJudge(fixed="B"), 0.5)])
def test_text_mode_end_to_end(judge, expected):
    report, answers = pia.evaluate(ITEMS, pia.PIJudge(judge, mode="text"), cache=NullCache(), progress=False)
    assert report["mode"] == "text" and len(answers) == 16
    for side in ("chosen", "rejected"):
        assert report[side]["accuracy"] == expected and report[side]["unparseable"] == 0


def test_unparseable_text_is_counted_not_scored(tmp_path):
    report, _ = pia.evaluate(ITEMS, pia.PIJudge(KeywordJudge(fixed="no idea"), mode="text"), cache=NullCache(), progress=False)
    assert report["chosen"]["accuracy"] is None and report["chosen"]["unparseable_share"] == 1.0


def test_questions_put_the_target_in_both_positions():
    judge = pia.PIJudge(KeywordJudge(), mode="text")
    questions = judge.questions(ITEMS[:1])
    assert [(q.side, q.order, q.target) for q in questions] == [
        ("chosen", "target_first", "A"), ("chosen", "target_second", "B"),
        ("rejected", "target_first", "A"), ("rejected", "target_second", "B"),
    ]
    rejected_first = questions[2].request.prompt
    assert rejected_first.index("Short 0.") < rejected_first.index("A long detailed")
    assert "Persona: The user is busy" in rejected_first


def test_answers_are_cached(tmp_path):
    cache = ResultCache(tmp_path / "c.sqlite")
    generator = KeywordJudge()
    pia.evaluate(ITEMS, pia.PIJudge(generator, mode="text"), cache=cache, progress=False)
    report, _ = pia.evaluate(ITEMS, pia.PIJudge(generator, mode="text"), cache=cache, progress=False)
    assert generator.calls == 16 and report["requests"]["cached"] == 16


def test_logprobs_mode_needs_a_backend_with_them():
    from persona_eval.errors import UsageError

    with pytest.raises(UsageError, match="--mode logprobs needs"):
        pia.PIJudge(KeywordJudge(), mode="logprobs")
    assert pia.PIJudge(KeywordJudge(), mode="auto").mode == "text"


def test_cli_missing_persona_field_names_the_line(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"id": 1, "prompt": "p", "chosen": "a", "rejected": "b", "chosen_persona": "The user is x and prefers y."}) + "\n")
    result = cli("pi-accuracy", str(data), "--quiet")
    assert result.returncode == 2 and f"{data}:1: field 'rejected_persona'" in result.stderr


@pytest.mark.slow
def test_logprobs_judge_on_the_demo_task(tmp_path, embedded_model_dir):
    out = tmp_path / "pi.json"
    args = ("pi-accuracy", "demo", "--judge-model", "hf:embedded", "--limit", "2", "--max-response-chars", "300",
            "--quiet", "--json", "-o", str(out))
    result = invoke(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "logprobs" and report["source"]["task"] == "demo"
    for side in ("chosen", "rejected"):
        entry = report[side]
        assert entry["answers"] == 4 and entry["unparseable"] == 0
        assert 0.0 <= entry["accuracy"] <= 1.0 and 0.0 < entry["mean_prob_target"] < 1.0
    saved = json.loads(out.read_text())
    assert len(saved["answers"]) == 8 and all(0.0 < a["prob_a"] < 1.0 for a in saved["answers"])
    again = json.loads(invoke(*args).stdout)
    assert again["requests"]["cached"] == 8 and again["chosen"] == report["chosen"]
