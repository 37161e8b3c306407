"""Persona inference: post-processing, screens, data loading, re-asks, resume, and `persona-eval infer` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pytest
from cli_support import cli, invoke

from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenRequest, GenResult
from persona_eval.errors import UsageError
from persona_eval.persona_inference.infer_file import InferConfig, infer_file, sidecar_path
from persona_eval.persona_inference.inference import PersonaInferrer, pair_jobs
from persona_eval.persona_inference.pairs import FieldNames, load_pairs, normalise_record
from persona_eval.persona_inference.prompt import REASK_NOTES, PersonaPrompt, load_exemplars
from persona_eval.persona_inference.screening import (
    first_sentence,
    format_problem,
    normalize_persona,
    screen_adversarial,
    screen_protected,
)
from persona_eval.plugins.personas.inferred import InferredPersonas
from persona_eval.storage.cache import NullCache, ResultCache
from persona_eval.storage.jsonl import read_jsonl

REPO = Path(__file__).resolve().parents[1]
DEMO_TRAIN = REPO / "tasks" / "demo" / "data" / "train.jsonl"


class ScriptedGenerator(Generator):
    """Answers each request through `reply(request, attempt_index)`; records every request it saw."""

    preferred_batch_size = 4

    def __init__(self, reply):
        self.reply = reply
        self.seen: list[GenRequest] = []

    def identity(self):
        return {"backend": "scripted", "reply": getattr(self.reply, "__name__", "?")}

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        self.seen.extend(requests)
        return [GenResult(text=self.reply(r)) for r in requests]


# ---- post-processing -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, prefixed, expected",
    [
        # The paper's cut keeps the whole first line, a second sentence included.
        ("a careful cook and prefers detailed steps. Also, they like food.", True, "The user is a careful cook and prefers detailed steps. Also, they like food."),
        ("\n\nThe user is a reader and prefers depth.\nPrompt: next", False, "The user is a reader and prefers depth."),
        ("The user is a busy parent and prefers short lists\nSecond line", False, "The user is a busy parent and prefers short lists."),
        ('Persona: "The user is curious and prefers examples, e.g. recipes."', False, "The user is curious and prefers examples, e.g. recipes."),
        ("**The user is  a   planner and prefers checklists.**", True, "The user is a planner and prefers checklists."),
        ("the user is thrifty and prefers free tools;", False, "The user is thrifty and prefers free tools."),
        ("", True, "The user is."),
    ],
)
def test_normalize_persona(raw, prefixed, expected):
    assert normalize_persona(raw, prefixed=prefixed) == expected


def test_normalize_persona_sentence_cut():
    raw = "a careful cook and prefers detailed steps. Also, they like food."
    assert normalize_persona(raw, prefixed=True, cut="sentence") == "The user is a careful cook and prefers detailed steps."
    with pytest.raises(ValueError):
        normalize_persona(raw, cut="word")


def test_first_sentence_ignores_abbreviations():
    assert first_sentence("The user likes tools, e.g. saws. Then more.") == "The user likes tools, e.g. saws."
    assert first_sentence("\n\nNo end punctuation here") == "No end punctuation here"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("The user is a new cook and prefers detailed steps with reasons.", None),
        ("The user is vigilant and proactive, preferring concrete warning signs.", None),
        ("The user is a practical individual who prefers concise information.", None),
        ("A user who likes detail and prefers long answers.", "does not start with 'The user is'"),
        ("The user is a new cook who wants reliable results.", "no 'prefers' clause"),
        ("The user is tired and prefers.", "nothing after 'prefers'"),
        ("The user prefers x.", "does not start with 'The user is'"),
        ("The user is " + "very " * 70 + "busy and prefers lists.", "too long (77 words)"),
        ("", "empty"),
    ],
)
def test_format_problem(text, problem):
    assert format_problem(text) == problem


@pytest.mark.parametrize(
    "text, category",
    [
        ("The user is a devout Christian and prefers answers grounded in scripture.", "religion"),
        ("The user is a 70-year-old retiree and prefers large-print instructions.", "age"),
        ("The user is a single mother who prefers quick recipes.", "gender"),
        ("The user is a gay man and prefers frank advice.", "sexual orientation"),
        ("The user is Mexican and prefers recipes with chili.", "nationality"),
        ("The user is blind and prefers text that works with a screen reader.", "disability or health"),
        ("The user is curious and prefers explanations that respect their own faith.", "religion"),
        ("The user is a teacher and prefers examples she can use in class.", "gender"),
        ("The user is a Hispanic student and prefers bilingual examples.", "race or ethnicity"),
    ],
)
def test_screen_protected_flags_attributes_of_the_user(text, category):
    found = screen_protected(text)
    assert category in {f["category"] for f in found}, found


@pytest.mark.parametrize(
    "text",
    [
        "The user is interested in religious history and prefers balanced sources.",
        "The user is a parent of a young child and prefers gentle bedtime routines.",
        "The user is a fan of French cooking and prefers classic techniques.",
        "The user is practical and prefers straightforward, old-fashioned advice.",
        "The user is inclusive and prefers workplace policies that protect employees regardless of sexual orientation.",
        "The user is an advocate for disability rights and prefers accessible formats.",
        "The user is a busy parent who prefers a 3-item list for their child's routine.",
    ],
)
def test_screen_protected_lets_topics_through(text):
    assert screen_protected(text) == []


@pytest.mark.parametrize(
    "text, flagged",
    [
        ("The user is manipulative and prefers tactics that exploit their partner's vulnerabilities.", True),
        ("The user is angry and seeking ways to steal from their employer without getting caught.", True),
        ("The user is blunt and prefers unfiltered answers without ethical warnings.", True),
        ("The user is determined and prefers step-by-step help to get revenge on a coworker.", True),
        ("The user is introspective and prefers healing rather than seeking revenge or retaliation.", False),
        ("The user is empathetic and prefers open communication, avoiding manipulative tactics.", False),
        ("The user is law-abiding and prefers de-escalation over aggressive or illegal actions.", False),
        ("The user is a new cook and prefers detailed steps with reasons.", False),
    ],
)
def test_screen_adversarial(text, flagged):
    assert bool(screen_adversarial(text)) is flagged


def test_default_exemplars_are_valid_and_clean():
    exemplars = load_exemplars()
    assert len(exemplars) == 5  # as each of the paper's prompt files (pinned in test_pi_paper_defaults.py)
    for e in exemplars:
        assert format_problem(e.persona) is None
        assert screen_protected(e.persona) == []
        assert screen_adversarial(e.persona) == []


def test_exemplar_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "ex.yaml"
    bad.write_text("exemplars:\n  - prompt: hi\n    preferred: a\n    dispreferred: b\n    persona: The user is kind and prefers tea.\n"
                   "  - prompt: yo\n    preferred: a\n    persona: The user is kind and prefers tea.\n")
    with pytest.raises(UsageError, match=r"ex\.yaml:6: exemplar is missing 'dispreferred'"):
        load_exemplars(bad)
    bad.write_text("- prompt: hi\n  preferred: a\n  dispreferred: b\n  persona: Likes tea.\n")
    with pytest.raises(UsageError, match=r"ex\.yaml:1: .*does not follow the persona format"):
        load_exemplars(bad)


def test_prompt_renders_k_exemplars_and_skips_the_query_itself():
    exemplars = load_exemplars()
    prompt = PersonaPrompt(exemplars, k=2)
    text = prompt.render(exemplars[0].prompt, "PREFERRED TEXT", "OTHER TEXT")
    assert exemplars[0].persona not in text  # the query's own exemplar is never a shot
    assert exemplars[1].persona in text and exemplars[2].persona in text
    assert text.count("Chosen Response:") == 3
    assert text.index("PREFERRED TEXT") > text.index(exemplars[2].persona)
    with pytest.raises(UsageError, match="more exemplars"):
        PersonaPrompt(exemplars, k=len(exemplars) + 1)


# ---- input data ------------------------------------------------------------------------


def test_hh_text_dialogues_are_split_at_the_last_shared_assistant_turn():
    record = {
        "chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Sure, put it in boiling water for 9 minutes.",
        "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Sure, just microwave it.",
    }
    prompt, chosen, rejected, rewritten = normalise_record(record, FieldNames(), "x:1")
    assert prompt == "How do I boil an egg?"
    assert chosen == "Sure, put it in boiling water for 9 minutes."
    assert rejected == "Sure, just microwave it."
    assert rewritten == {"chosen": record["chosen"], "rejected": record["rejected"]}


def test_hh_multi_turn_prompt_keeps_speakers():
    shared = "\n\nHuman: I want a pet.\n\nAssistant: What kind?\n\nHuman: Something quiet."
    record = {"chosen": shared + "\n\nAssistant: A fish or a rabbit.", "rejected": shared + "\n\nAssistant: A parrot."}
    prompt, chosen, rejected, _ = normalise_record(record, FieldNames(), "x:1")
    assert prompt == "Human: I want a pet.\n\nAssistant: What kind?\n\nHuman: Something quiet."
    assert (chosen, rejected) == ("A fish or a rabbit.", "A parrot.")


def test_message_lists_are_flattened():
    user = {"role": "user", "content": "Name a colour."}
    record = {"chosen": [user, {"role": "assistant", "content": "Blue."}], "rejected": [user, {"role": "assistant", "content": "No."}]}
    assert normalise_record(record, FieldNames(), "x:1")[:3] == ("Name a colour.", "Blue.", "No.")
    record["prompt"] = "Explicit prompt"
    assert normalise_record(record, FieldNames(), "x:1")[:3] == ("Explicit prompt", "Blue.", "No.")


def test_malformed_inputs_name_file_and_line(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"id": 1, "prompt": "p", "chosen": "a", "rejected": "b"}\n{"id": 2, "prompt": "p"\n{"id": 3}\n')
    with pytest.raises(UsageError, match=r"pairs\.jsonl:2: malformed JSON Lines record"):
        load_pairs(str(data))
    data.write_text('{"id": 1, "prompt": "p", "chosen": "a", "rejected": "b"}\n{"id": 2, "prompt": "p", "chosen": "a"}\n')
    with pytest.raises(UsageError, match=r"pairs\.jsonl:2: missing field 'rejected'"):
        load_pairs(str(data))
    data.write_text('{"id": 1, "prompt": "p", "chosen": "a", "rejected": "b"}\n{"id": 1, "prompt": "q", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(UsageError, match=r"pairs\.jsonl:2: duplicate id '1'"):
        load_pairs(str(data))
    data.write_text('{"q": "p", "chosen": 5, "rejected": "b"}\n')
    with pytest.raises(UsageError, match=r"pairs\.jsonl:1: field 'chosen' must be text"):
        load_pairs(str(data), names=FieldNames(prompt="q"))
    data.write_text('{"chosen": "just text", "rejected": "other text"}\n')
    with pytest.raises(UsageError, match=r"pairs\.jsonl:1: missing field 'prompt'"):
        load_pairs(str(data))


def test_csv_parquet_and_field_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": f"q{i}", "good": f"good {i}", "bad": f"bad {i}"} for i in range(3)]
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("question,good,bad\n" + "".join(f"{r['question']},{r['good']},{r['bad']}\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    names = FieldNames(prompt="question", chosen="good", rejected="bad")
    for path in (csv_path, tmp_path / "pairs.parquet"):
        pairs = load_pairs(str(path), names=names, limit=2)
        assert [(p.id, p.prompt, p.chosen, p.rejected) for p in pairs] == [("row-0", "q0", "good 0", "bad 0"), ("row-1", "q1", "good 1", "bad 1")]


def test_dataset_folder_through_datasets(tmp_path, monkeypatch):
    """The `datasets` path (hub id, config, split) with a local dataset folder, offline."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    folder = tmp_path / "hh_like"
    folder.mkdir()
    with open(folder / "test.jsonl", "w") as handle:
        for i in range(3):
            handle.write(json.dumps({"chosen": f"\n\nHuman: Q{i}?\n\nAssistant: Good {i}.", "rejected": f"\n\nHuman: Q{i}?\n\nAssistant: Bad {i}."}) + "\n")
    pairs = load_pairs(str(folder), hf_split="test")
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs][2] == ("Q2?", "Good 2.", "Bad 2.")
    assert pairs[0].where.endswith("hh_like/test[0]")
    with pytest.raises(UsageError, match="cannot load dataset"):
        load_pairs(str(folder), hf_split="validation")


# ---- inference control flow (scripted generator) ---------------------------------------


def _pairs(n: int):
    from persona_eval.persona_inference.pairs import PreferencePair

    return [PreferencePair(f"p{i}", f"Prompt {i}?", f"Long careful answer {i}.", f"Short {i}.", {"id": f"p{i}", "prompt": f"Prompt {i}?", "chosen": f"Long careful answer {i}.", "rejected": f"Short {i}."}) for i in range(n)]


def test_reask_then_keep_or_drop(tmp_path):
    def reply(request: GenRequest) -> str:
        query = request.prompt.rsplit("Prompt:", 1)[1]
        reasked = request.params.temperature > 0
        if "Prompt 0?" in query:  # protected first, clean when re-asked
            return "The user is a devout Muslim and prefers long answers." if not reasked else "The user is a thorough reader and prefers long answers."
        if "Prompt 1?" in query:  # always protected
            return "The user is a retiree and prefers short answers."
        if "Prompt 2?" in query:  # never in the format
            return "The user is someone who likes stuff"
        return "The user is a harm-seeker wanting to steal from shops and prefers quick tips."

    generator = ScriptedGenerator(reply)
    inferrer = PersonaInferrer(generator, k=1, max_attempts=2, cache=NullCache())
    jobs = [pair_jobs(p.id, p.prompt, p.chosen, p.rejected)[0] for p in _pairs(4)]
    outcomes = inferrer.infer(jobs)
    assert [o.status for o in outcomes] == ["kept", "dropped", "dropped", "kept"]
    assert outcomes[0].text == "The user is a thorough reader and prefers long answers."
    assert outcomes[0].attempts == 2 and outcomes[0].protected == [{"category": "religion", "term": "devout"}, {"category": "religion", "term": "muslim"}]
    assert outcomes[1].reason.startswith("protected attribute: age (retiree)") and outcomes[1].text == ""
    assert outcomes[2].reason == "format: no 'prefers' clause"
    assert outcomes[3].adversarial and outcomes[3].attempts == 1
    reasks = [r for r in generator.seen if r.params.temperature > 0]
    assert len(reasks) == 3 and all(r.params.seed == 1 for r in reasks)
    assert any(REASK_NOTES["protected"] in r.prompt for r in reasks)
    assert any(REASK_NOTES["format"] in r.prompt for r in reasks)
    # The rejected persona sees the responses swapped.
    chosen_job, rejected_job = pair_jobs("x", "P", "C", "R")
    assert (rejected_job.preferred, rejected_job.other) == ("R", "C") and (chosen_job.preferred, chosen_job.other) == ("C", "R")


def test_infer_file_resumes_and_summarises(tmp_path):
    def reply(request: GenRequest) -> str:
        query = request.prompt.rsplit("Chosen Response:", 1)[1]
        if "Prompt 3?" in request.prompt.rsplit("Prompt:", 1)[1]:
            return "The user is a mother and prefers things."  # protected every time: item 3 is dropped
        chosen = query.split("Rejected Response:")[0]
        return "The user is a reader and prefers long answers." if "Long careful" in chosen else "The user is a skimmer and prefers short answers."

    out = tmp_path / "out" / "personas.jsonl"
    config = InferConfig(model="scripted:x", k=1, max_attempts=2)
    first = ScriptedGenerator(reply)
    summary = infer_file(_pairs(5), out, config, progress=False, cache=NullCache(), generator=first)
    assert summary["counts"] | {"requests_this_run": None} == {
        "items": 5, "items_kept": 4, "items_dropped": 1, "personas": 10, "kept": 8, "dropped": 2, "dropped_protected": 2,
        "dropped_format": 0, "reasked": 2, "flagged_protected": 2, "flagged_adversarial": 0, "requests_this_run": None,
    }
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["p0", "p1", "p2", "p4"]
    assert records[0]["chosen_persona"] == "The user is a reader and prefers long answers."
    assert records[0]["rejected_persona"] == "The user is a skimmer and prefers short answers."
    meta = records[0]["persona_inference"]
    assert meta["model"] == "scripted:x" and meta["prompt_hash"] and meta["chosen"]["attempts"] == 1
    dropped = read_jsonl(sidecar_path(out, "dropped"))
    assert [r["id"] for r in dropped] == ["p3"] and "protected" in dropped[0]["persona_inference"]["chosen"]["reason"]
    assert json.loads(sidecar_path(out, "summary").read_text())["counts"]["items_kept"] == 4

    # Simulate a crash: keep two records and a torn third line.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    second = ScriptedGenerator(reply)
    summary = infer_file(_pairs(5), out, config, progress=False, cache=NullCache(), generator=second)
    assert [r["id"] for r in read_jsonl(out)] == ["p0", "p1", "p2", "p4"]
    assert read_jsonl(out)[2] == records[2]
    assert summary["resumed"] == 3 and summary["counts"]["items"] == 5
    assert {r.id.split("/")[0] for r in second.seen} == {"p2", "p4"}  # only the lost items were redone

    # Another model must not append to this file.
    with pytest.raises(UsageError, match="another model, prompt or setting"):
        infer_file(_pairs(5), out, InferConfig(model="scripted:x", k=2, max_attempts=2), progress=False,
                      cache=NullCache(), generator=ScriptedGenerator(reply))


def test_results_are_cached(tmp_path):
    def reply(request):
        return "The user is a reader and prefers long answers."

    cache = ResultCache(tmp_path / "cache.sqlite")
    generator = ScriptedGenerator(reply)
    jobs = [job for p in _pairs(3) for job in pair_jobs(p.id, p.prompt, p.chosen, p.rejected)]
    PersonaInferrer(generator, k=2, cache=cache).infer(jobs)
    assert len(generator.seen) == 6
    again = PersonaInferrer(generator, k=2, cache=cache)
    outcomes = again.infer(jobs)
    assert len(generator.seen) == 6 and again.stats["cached"] == 6 and all(o.cached == 1 for o in outcomes)


def test_inferred_source_needs_a_model():
    with pytest.raises(UsageError, match="needs a PI model: pass --pi-model"):
        InferredPersonas(task=None)


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"\n')
    out = tmp_path / "out.jsonl"
    result = cli("infer", str(data), "-o", str(out), "--quiet")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and f"{data}:2" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [data]


def test_infer_and_pi_accuracy_over_an_openai_compatible_api(tmp_path):
    """Any generator backend: a real OpenAI-compatible server on loopback answers as a PI model and as a judge."""
    from openai_server_support import serve

    seen = []

    def respond(chat) -> str:
        system, prompt, prefix = chat.parts()
        if "Which response would this user prefer?" in prompt:  # the PI-accuracy judge
            persona = prompt.split("Persona:", 1)[1].split("\n", 1)[0]
            first = prompt.split("Response A:", 1)[1].split("Response B:", 1)[0]
            return "A" if ("careful answer" in first) == ("reader" in persona) else "B"
        seen.append((system, prefix))
        preferred = prompt.rsplit("Chosen Response:", 1)[1].split("Rejected Response:", 1)[0]
        # A chatty model: the persona line, then more text; the paper's cut keeps the first line.
        persona = "The user is a reader and prefers long answers." if "careful answer" in preferred else "The user is a skimmer and prefers short answers."
        return f"{persona}\nThis is because the chosen response is longer."

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p.record) + "\n" for p in _pairs(3)))
    out = tmp_path / "personas.jsonl"
    with serve(respond) as server:
        model = f"openai:pi-test,base_url={server.base_url}"
        result = cli("infer", str(data), "-o", str(out), "--model", model, "--quiet", "--json", "--no-cache")
        assert result.returncode == 0, result.stderr
        judged = cli("pi-accuracy", str(out), "--judge-model", model, "--quiet", "--json", "--no-cache")
        assert judged.returncode == 0, judged.stderr
    assert json.loads(result.stdout)["counts"]["kept"] == 6
    records = read_jsonl(out)
    assert [r["chosen_persona"] for r in records] == ["The user is a reader and prefers long answers."] * 3
    assert [r["rejected_persona"] for r in records] == ["The user is a skimmer and prefers short answers."] * 3
    assert records[0]["persona_inference"]["model_identity"]["backend"] == "openai"
    assert seen and all(entry == (None, "") for entry in seen)  # the paper's layout: one user message, no forced prefix
    report = json.loads(judged.stdout)
    assert report["mode"] == "text"
    assert report["chosen"]["accuracy"] == 1.0 and report["rejected"]["accuracy"] == 1.0 and report["chosen"]["unparseable"] == 0


# ---- end to end with the embedded model ------------------------------------------------


@pytest.mark.slow
def test_infer_end_to_end_resume_and_task(tmp_path, embedded_model_dir):
    out = tmp_path / "personas.jsonl"
    args = ("infer", str(DEMO_TRAIN), "-o", str(out), "--model", "hf:embedded", "--limit", "2", "--k", "1",
            "--max-new-tokens", "24", "--max-response-chars", "300", "--quiet", "--json",
            "--parquet", str(tmp_path / "personas.parquet"))
    first = invoke(*args)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["counts"]["items"] == 2 and summary["counts"]["personas"] == 4
    kept = read_jsonl(out)
    assert kept, "the embedded model kept no persona pair"
    for record in kept:
        for side in ("chosen", "rejected"):
            assert format_problem(record[f"{side}_persona"]) is None
            assert record["persona_inference"][side]["status"] == "kept"
        assert record["persona_inference"]["model_identity"]["backend"] == "hf"
        assert record["persona_inference"]["replaced_fields"]["chosen_persona"]  # the demo's gold persona, kept aside
        assert {"id", "prompt", "chosen", "rejected"} <= set(record)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "personas.parquet").num_rows == len(kept)

    # Interrupted: the last record lost mid-write. The rerun redoes it from the cache.
    before = out.read_text()
    lines = before.splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:20])
    second = invoke(*args)
    assert second.returncode == 0, second.stderr
    resumed = json.loads(second.stdout)
    assert resumed["resumed"] == 1  # one of the two items survived the crash
    assert resumed["counts"] == summary["counts"] | {"requests_this_run": resumed["counts"]["requests_this_run"]}
    assert resumed["counts"]["requests_this_run"]["computed"] == 0
    assert out.read_text() == before

    # A task YAML can point at the output directly.
    task = tmp_path / "inferred.yaml"
    task.write_text(
        "name: inferred-demo\ndataset:\n  test: personas.jsonl\n  train: personas.jsonl\n"
        "generation:\n  max_new_tokens: 12\njudge:\n  options:\n    feedback: false\n"
    )
    validated = invoke("validate", str(task))
    assert validated.returncode == 0, validated.stderr
    run = invoke("run", "--task", str(task), "--split", "rejected", "--limit", "1", "--quiet", "--json",
                 "--output-dir", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr
    generations = read_jsonl(tmp_path / "run" / "generations.jsonl")
    assert {g["persona"] for g in generations} == {kept[0]["rejected_persona"]}


@pytest.mark.slow
def test_inferred_persona_source_in_a_run(tmp_path, embedded_model_dir):
    task = tmp_path / "t.yaml"
    task.write_text(
        f"name: t\ndataset:\n  test: {REPO / 'tasks' / 'demo' / 'data' / 'test.jsonl'}\n"
        "persona_source: inferred\npersona_source_options:\n  k: 1\n  max_new_tokens: 24\n  max_response_chars: 300\n"
        "generation:\n  max_new_tokens: 8\njudge:\n  options:\n    feedback: false\n"
    )
    run = invoke("run", "--task", str(task), "--persona-source", "inferred", "--pi-model", "hf:embedded", "--split", "chosen",
              "--limit", "1", "--quiet", "--json", "--output-dir", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert results["persona_source"]["name"] == "inferred"
    assert results["persona_source"]["identity"]["pi_model"] == "hf:embedded"
    record = read_jsonl(tmp_path / "run" / "generations.jsonl")[0]
    assert record["persona_source"] == "inferred" and record["persona"].startswith("The user is")
    assert record["persona_provenance"]["side"] == "chosen" and record["persona_provenance"]["prompt_hash"]
