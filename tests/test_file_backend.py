"""The `file` generator: the paper's published outputs (read in place), JSON Lines, CSV, errors."""

from __future__ import annotations

import csv
import json

import pytest

from persona_eval.contracts.records import Example, GenRequest
from persona_eval.errors import UsageError
from persona_eval.plugins.generators.file import FileGenerator, raw_question
from persona_eval.rendering.prompts import render_input
from persona_eval.taskfile.schema import DEFAULT_PROMPTS


def paper_inputs(folder):
    """Each BeaverTails test item rebuilt from two *other* files: its question (from the
    no-persona outputs) and its rejected gold persona (from DPO's first-person input)."""
    none = json.loads((folder / "beavertails" / "dpo__none.json").read_text())
    inline = json.loads((folder / "beavertails" / "dpo__gold-rejected.json").read_text())
    items = []
    for index, (plain, first_person) in enumerate(zip(none, inline)):
        head, tail = "Prompt: ", "\nResponse:"
        question = plain["prompt"][len(head): -len(tail)]
        assert plain["prompt"] == f"{head}{question}{tail}"
        persona_part = first_person["prompt"][len(head) + len(question): -len(tail)]
        # first_person(): "The user is X" -> " I am X"; other personas are appended as they are.
        if persona_part.startswith(" I am "):
            persona = "The user is " + persona_part[len(" I am "):]
        else:
            persona = persona_part.strip()
        items.append((Example(id=f"bt-{index}", prompt=question), persona))
    return items


def test_paper_file_matches_every_rendered_pt_input(paper_outputs):
    path = paper_outputs / "beavertails" / "pt_dpo__gold-rejected.json"
    published = json.loads(path.read_text())
    items = paper_inputs(paper_outputs)
    assert len(items) == len(published) == 499
    requests = [
        GenRequest(id=example.id, prompt=render_input(DEFAULT_PROMPTS, "pt", example, persona))
        for example, persona in items
    ]
    generator = FileGenerator(str(path))
    results = generator.generate(requests)
    assert len(results) == 499
    ended = 0
    for result, row in zip(results, published):
        raw = row["response"]
        ended += raw.rstrip().endswith("<|end_of_text|>")
        assert "<|end_of_text|>" not in result.text
        assert result.text == raw.replace("<|end_of_text|>", "").strip()
        assert result.finish_reason == ("stop" if raw.rstrip().endswith("<|end_of_text|>") else None)
    assert ended > 400  # most replies stopped on their own; the rest were cut at 512 tokens
    assert all(generator.lookup(r)[1] == "prompt" for r in requests)
    identity = generator.identity()
    assert identity["backend"] == "file" and identity["path"] == str(path.resolve())
    assert len(identity["sha256"]) == 64


def test_paper_file_through_the_registry_with_strip_end_off(paper_outputs):
    from persona_eval.contracts.factories import build_generator

    path = paper_outputs / "beavertails" / "dpo__none.json"
    first = json.loads(path.read_text())[0]
    generator = build_generator(f"file:{path},strip_end=false")
    result = generator.generate([GenRequest(id="any", prompt=first["prompt"])])[0]
    assert result.text == first["response"].strip() and result.text.endswith("<|end_of_text|>")


def test_question_fallback_and_baseline_template(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps([
        {"prompt": "Prompt: How do I boil an egg?\nPersona: The user is hurried.\nResponse:", "response": " Boil 9 min.<|end_of_text|>"},
        {"prompt": "Prompt: Is the sea salty?\nPersona: The user is curious.\nResponse:", "response": "Yes."},
    ]))
    generator = FileGenerator(str(path))
    # The same question rendered with another persona only matches by question (warns).
    other = GenRequest(id="x", prompt="Prompt: How do I boil an egg?\nPersona: The user is a chef.\nResponse:")
    assert generator.lookup(other)[1] == "question"
    assert generator.generate([other])[0].text == "Boil 9 min."
    assert raw_question("ex 1\n\nPrompt: Is the sea salty?\nResponse:") == "Is the sea salty?"
    spaced = GenRequest(id="y", prompt="Prompt: Is the sea salty?\nPersona: The user is curious.\nResponse:  ")
    assert generator.lookup(spaced)[1] == "normalized prompt"
    with pytest.raises(UsageError, match="no id field"):
        FileGenerator(str(path), key="id")


def test_jsonl_by_id(tmp_path):
    path = tmp_path / "outputs.jsonl"
    lines = [json.dumps({"id": f"item-{i}", "output": f"answer {i}</s>", "finish_reason": "length" if i == 2 else None})
             for i in range(3)]
    path.write_text("\n".join(lines) + "\n\n")
    generator = FileGenerator(str(path))
    results = generator.generate([GenRequest(id="item-2", prompt="anything"), GenRequest(id="item-0", prompt="x")])
    assert [r.text for r in results] == ["answer 2", "answer 0"]
    assert [r.finish_reason for r in results] == ["length", "stop"]
    assert generator.identity()["response_field"] == "output"


def test_csv_by_id_with_key_option(tmp_path):
    path = tmp_path / "outputs.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "prompt", "response"])
        writer.writerow(["a", "Prompt: one\nResponse:", "uno, with a comma\nand a newline"])
        writer.writerow(["b", "Prompt: two\nResponse:", "dos<|end_of_text|>"])
    generator = FileGenerator(str(path), key="id")
    results = generator.generate([GenRequest(id="b", prompt="?"), GenRequest(id="a", prompt="?")])
    assert [r.text for r in results] == ["dos", "uno, with a comma\nand a newline"]
    # key=id never falls back to the prompt
    with pytest.raises(UsageError, match=r"1 of 1 item\(s\) have no response.*'zz' \(no such id\)"):
        generator.generate([GenRequest(id="zz", prompt="Prompt: one\nResponse:")])
    by_prompt = FileGenerator(str(path), key="prompt")
    assert by_prompt.generate([GenRequest(id="a", prompt="Prompt: two\nResponse:")])[0].text == "dos"


def test_missing_items_name_ids_and_file(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"k1": "one", "k2": {"response": "two"}}))
    generator = FileGenerator(str(path))
    requests = [GenRequest(id=f"m{i}", prompt=f"p{i}") for i in range(8)] + [GenRequest(id="k2", prompt="")]
    with pytest.raises(UsageError) as caught:
        generator.generate(requests)
    message = str(caught.value)
    assert str(path) in message and "8 of 9 item(s)" in message
    assert "'m0'" in message and "'m4'" in message and "'m5'" not in message and "and 3 more" in message
    assert generator.generate([requests[-1]])[0].text == "two"


def test_ambiguous_prompts_do_not_match(tmp_path):
    path = tmp_path / "outputs.jsonl"
    path.write_text(json.dumps({"prompt": "same", "response": "one"}) + "\n" + json.dumps({"prompt": "same", "response": "two"}) + "\n")
    with pytest.raises(UsageError, match="ambiguous prompt"):
        FileGenerator(str(path)).generate([GenRequest(id="q", prompt="same")])


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", '{"id": "a", "response": "x"}\n{not json}\n', r"bad.jsonl:2: file: not valid JSON"),
    ("bad.json", '[{"id": "a", "response": 3}]', r"element 0: file: field 'response' missing or not text"),
    ("dup.jsonl", '{"id": "a", "response": "x"}\n{"id": "a", "response": "y"}\n', r"dup.jsonl:2: file: duplicate id 'a'"),
    ("nofield.csv", "id,reply\na,x\n", r"no response field"),
    ("empty.json", "[]", r"holds no outputs"),
    ("outputs.txt", "hello", r"unknown format '.txt'"),
    ("latin.jsonl", b'{"id": "a", "response": "caf\xe9"}\n', r"not UTF-8"),
])
def test_bad_files_are_usage_errors_naming_the_place(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(UsageError, match=message):
        FileGenerator(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        FileGenerator(str(tmp_path / "nope.json"))


def test_identity_changes_with_content(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_text(json.dumps({"id": "a", "response": "x"}) + "\n")
    before = FileGenerator(str(path)).identity()
    path.write_text(json.dumps({"id": "a", "response": "y"}) + "\n")
    after = FileGenerator(str(path)).identity()
    assert before["sha256"] != after["sha256"] and before["path"] == after["path"]
