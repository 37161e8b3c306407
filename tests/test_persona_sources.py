"""Persona sources `retrieved` and `user`, the runner's handling of skipped items, the CLI.

Leak-freedom is tested on a training set that contains the test items themselves
(same id) and exact duplicates of their prompts up to case and whitespace: none of them
may ever be retrieved. User-file errors must name the file and line, or list the first
missing ids. The end-to-end runs use the embedded model (slow).
"""

from __future__ import annotations

import inspect
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from persona_eval.cli import cli, persona_source_choice
from persona_eval.contracts import plugin_manager
from persona_eval.contracts.factories import build_persona_source
from persona_eval.contracts.records import Persona
from persona_eval.errors import UsageError
from persona_eval.plugins.personas.common import normalize_prompt
from persona_eval.plugins.personas.retrieved import parse_retriever_spec
from persona_eval.taskfile.loading import load_task

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "tasks" / "demo"
DEMO = DEMO_DIR / "demo.yaml"


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_task(folder: Path, test, train=None, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dataset = {"test": "test.jsonl"}
    _write_jsonl(folder / "test.jsonl", test)
    if train is not None:
        _write_jsonl(folder / "train.jsonl", train)
        dataset["train"] = "train.jsonl"
    spec = {"name": "pstask", "dataset": dataset, **extra}
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def item(id, prompt, chosen_persona="", rejected_persona=""):
    return {"id": id, "prompt": prompt, "chosen": "c", "rejected": "r",
            "chosen_persona": chosen_persona, "rejected_persona": rejected_persona}


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_EVAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def invoke(*args):
    if "personas" not in cli.commands:
        plugin_manager.call_each("register_commands", cli=cli)
    separate = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    result = CliRunner(**separate).invoke(cli, [str(a) for a in args])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


# ---- retrieved: leak-freedom ---------------------------------------------------------


@pytest.fixture
def leaky_task(tmp_path):
    """The test prompt sits in train as itself (same id) and as a case/whitespace duplicate."""
    test = [item("t1", "How do I cook white rice on the stove?", "gold C", "gold R")]
    train = [
        item("t1", "How do I cook white rice on the stove?", "SELF C", "SELF R"),
        item("dup", "  how do I COOK white rice\ton the   stove? ", "DUP C", "DUP R"),
        item("near", "How do I cook brown rice on the stove?", "NEAR C", "NEAR R"),
        item("far", "What causes earthquakes?", "FAR C", "FAR R"),
    ]
    return load_task(make_task(tmp_path / "leaky", test, train))


@pytest.mark.parametrize("retriever", ["bm25", "dense"])
def test_retrieved_never_uses_the_item_itself_or_a_duplicate(leaky_task, fresh_cache, retriever):
    source = build_persona_source("retrieved", leaky_task, retriever=retriever)
    [rejected] = source.personas(leaky_task.load("test"), "rejected")
    [chosen] = source.personas(leaky_task.load("test"), "chosen")
    assert rejected.text == "NEAR R" and chosen.text == "NEAR C"
    prov = rejected.provenance
    assert prov["train_id"] == "near" and prov["rank"] == 3
    assert {s["train_id"]: s["reason"] for s in prov["skipped"]} == {
        "t1": "the test item itself (same id)", "dup": "same prompt as the test item",
    }
    assert [s["rank"] for s in prov["skipped"]] == [1, 2]


def test_retrieved_is_leak_free_on_the_demo_with_test_items_in_train(tmp_path, fresh_cache):
    test = _read(DEMO_DIR / "data" / "test.jsonl")
    train = _read(DEMO_DIR / "data" / "train.jsonl")
    # Every test item twice more in train: as itself and as a shouting, re-spaced copy.
    polluted = train + test + [{**t, "id": f"copy-{t['id']}", "prompt": "  " + t["prompt"].upper().replace(" ", "  ")} for t in test]
    task = load_task(make_task(tmp_path / "polluted", test, polluted))
    source = build_persona_source("retrieved", task, retriever="bm25", k=3)
    examples = task.load("test")
    personas = source.personas(examples, "rejected")
    train_by_id = {t["id"]: t for t in polluted}
    for example, persona in zip(examples, personas):
        prov = persona.provenance
        assert prov["train_id"] != example.id
        assert normalize_prompt(prov["train_prompt"]) != normalize_prompt(example.prompt)
        assert persona.text == train_by_id[prov["train_id"]]["rejected_persona"]
        assert len(prov["candidates"]) == 3
        for candidate in prov["candidates"]:
            assert normalize_prompt(train_by_id[candidate["train_id"]]["prompt"]) != normalize_prompt(example.prompt)
        # The leaks were there to be found: each was ranked above the persona used.
        assert {s["train_id"] for s in prov["skipped"]} == {example.id, f"copy-{example.id}"}


def test_training_items_without_a_persona_on_that_side_are_skipped(tmp_path, fresh_cache):
    test = [item("t1", "How do I cook white rice on the stove?")]
    train = [
        item("a", "How do I cook white rice in a pot?", "A chosen", ""),
        item("b", "How do I cook pasta on the stove?", "B chosen", "B rejected"),
    ]
    task = load_task(make_task(tmp_path / "t", test, train))
    source = build_persona_source("retrieved", task, retriever="bm25")
    assert source.personas(task.load("test"), "chosen")[0].provenance["train_id"] == "a"
    rejected = source.personas(task.load("test"), "rejected")[0]
    assert rejected.text == "B rejected"
    assert rejected.provenance["skipped"][0] == {**rejected.provenance["skipped"][0], "train_id": "a", "reason": "no rejected persona"}


def test_no_usable_training_item_is_a_usage_error(tmp_path, fresh_cache):
    test = [item("t1", "How do I cook rice?")]
    train = [item("t1", "How do I cook rice?", "x", "y"), item("t2", "HOW DO I COOK RICE?", "x", "y")]
    task = load_task(make_task(tmp_path / "t", test, train))
    with pytest.raises(UsageError, match="item 't1': no training item to take a rejected persona from"):
        build_persona_source("retrieved", task, retriever="bm25").personas(task.load("test"), "rejected")


def test_task_without_training_data_is_a_usage_error(tmp_path):
    task = load_task(make_task(tmp_path / "t", [item("t1", "p", "a", "b")]))
    with pytest.raises(UsageError, match="needs training data .* sets no dataset.train"):
        build_persona_source("retrieved", task)


# ---- retrieved: provenance, identity, determinism, options ---------------------------


def test_provenance_fields_and_identity(fresh_cache):
    task = load_task(DEMO)
    source = build_persona_source("retrieved", task, retriever="bm25", k=2)
    personas = source.personas(task.load("test")[:4], "rejected")
    identity = source.identity()
    assert identity["source"] == "retrieved" and identity["k"] == 2
    assert identity["retriever"]["name"] == "bm25" and identity["train_items"] == 48
    train = {e.id: e for e in task.load("train")}
    for persona in personas:
        prov = persona.provenance
        assert persona.source == "retrieved"
        assert set(prov) >= {"train_id", "train_prompt", "score", "rank", "retriever", "k", "side", "candidates", "skipped"}
        assert prov["train_prompt"] == train[prov["train_id"]].prompt
        assert persona.text == train[prov["train_id"]].rejected_persona
        assert isinstance(prov["score"], float) and prov["score"] > 0 and prov["rank"] == 1
        assert prov["retriever"] == identity["retriever"]
        assert [c["train_id"] for c in prov["candidates"]][0] == prov["train_id"] and len(prov["candidates"]) == 2
        json.dumps(prov)  # goes into generations.jsonl


def test_same_index_and_query_give_the_same_persona_and_reuse_the_index(fresh_cache):
    task = load_task(DEMO)
    examples = task.load("test")[:12]
    first = build_persona_source("retrieved", task, retriever="dense")
    a = first.personas(examples, "chosen")
    assert first.index_info["cache"] == "built"
    second = build_persona_source("retrieved", load_task(DEMO), retriever="dense")
    b = second.personas(examples, "chosen")
    assert second.index_info["cache"] == "hit" and second.index_info["path"] == first.index_info["path"]
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.provenance["train_id"] for p in a] == [p.provenance["train_id"] for p in b]
    assert first.identity() == second.identity()
    assert [p.text for p in first.personas(examples, "chosen")] == [p.text for p in a]


def test_identity_separates_retrievers_and_k(fresh_cache):
    task = load_task(DEMO)
    ids = [
        build_persona_source("retrieved", task, retriever="bm25").identity(),
        build_persona_source("retrieved", task, retriever="bm25", k=3).identity(),
        build_persona_source("retrieved", task, retriever="bm25,k1=1.2").identity(),
        build_persona_source("retrieved", task, retriever="dense").identity(),
    ]
    assert len({json.dumps(i, sort_keys=True) for i in ids}) == 4
    assert build_persona_source("gold", task).identity() == {"source": "gold"}


def test_task_retrieval_block_sets_defaults_for_its_own_retriever_only(tmp_path, fresh_cache):
    test = [item("t1", "How do I cook rice?", "a", "b")]
    train = [item("x1", "How do I cook pasta?", "c", "d")]
    path = make_task(tmp_path / "t", test, train, persona_source="retrieved",
                     retrieval={"retriever": "bm25", "k": 3, "options": {"k1": 1.2, "stemmer": None}})
    task = load_task(path)
    source = build_persona_source("retrieved", task)
    assert source.k == 3 and source.retriever.identity()["k1"] == 1.2 and source.retriever.identity()["stemmer"] is None
    # Another retriever does not inherit bm25's options (dense would reject k1).
    assert build_persona_source("retrieved", task, retriever="dense").retriever.identity()["name"] == "dense"
    # Inline options override the task's.
    assert build_persona_source("retrieved", task, retriever="bm25,k1=0.9").retriever.identity()["k1"] == 0.9


@pytest.mark.parametrize("kwargs, needle", [
    ({"retriever": "bm25,bogus=1"}, "does not accept these options"),
    ({"retriever": "bm25,k1"}, "is not key=value"),
    ({"retriever": "dnese"}, "did you mean 'dense'"),
    ({"retriever": "bm25", "k": 0}, "k must be an integer from 1 to 100"),
])
def test_retrieved_option_errors(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        build_persona_source("retrieved", load_task(DEMO), **kwargs)


def test_parse_retriever_spec_and_normalize_prompt():
    assert parse_retriever_spec("dense,model=/m,batch_size=4") == ("dense", {"model": "/m", "batch_size": 4})
    assert parse_retriever_spec("bm25,stemmer=none") == ("bm25", {"stemmer": None})
    assert normalize_prompt("  Hello\t\nWORLD ?") == normalize_prompt("hello world ?")
    assert normalize_prompt("ｈｅｌｌｏ") == "hello"


# ---- user-written personas -------------------------------------------------------------


@pytest.fixture
def demo():
    return load_task(DEMO)


def test_user_jsonl_by_id_and_by_prompt(tmp_path, demo):
    examples = demo.load("test")[:3]
    path = _write_jsonl(tmp_path / "p.jsonl", [
        {"id": examples[0].id, "persona": "The user is a nurse."},
        {"prompt": "  " + examples[1].prompt.upper() + " ", "persona": "The user is a pilot."},
        {"item_id": examples[2].id, "persona": "The user is a chef.", "split": "rejected"},
    ])
    source = build_persona_source("user", demo, persona_file=str(path))
    personas = source.personas(examples, "rejected")
    assert [p.text for p in personas] == ["The user is a nurse.", "The user is a pilot.", "The user is a chef."]
    assert [p.provenance["matched_by"] for p in personas] == ["id", "prompt", "id"]
    assert personas[1].provenance["where"] == f"{path}:2"
    assert source.identity()["source"] == "user" and len(source.identity()["file_sha256"]) == 16
    # The chef persona was written for the rejected split only.
    with pytest.raises(UsageError, match=f"1 of 3 item\\(s\\) have no chosen persona in the file: '{examples[2].id}'"):
        source.personas(examples, "chosen")


def test_user_csv_yaml_json(tmp_path, demo):
    examples = demo.load("test")[:2]
    (tmp_path / "p.csv").write_text(f"id,persona\n{examples[0].id},The user is A.\n{examples[1].id},\"The user is B, really.\"\n")
    (tmp_path / "p.yaml").write_text(f"{examples[0].id}: The user is A.\n{examples[1].id}: The user is B, really.\n")
    (tmp_path / "p.json").write_text(json.dumps([{"id": e.id, "persona": t} for e, t in zip(examples, ["The user is A.", "The user is B, really."])]))
    for name in ("p.csv", "p.yaml", "p.json"):
        source = build_persona_source("user", demo, persona_file=str(tmp_path / name))
        assert [p.text for p in source.personas(examples, "chosen")] == ["The user is A.", "The user is B, really."], name


def test_missing_items_list_the_first_ids(tmp_path, demo):
    examples = demo.load("test")[:10]
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": examples[0].id, "persona": "The user is here."}])
    source = build_persona_source("user", demo, persona_file=str(path))
    with pytest.raises(UsageError) as info:
        source.personas(examples, "rejected")
    message = str(info.value)
    assert message.startswith(f"{path}: 9 of 10 item(s) have no rejected persona")
    assert ", ".join(repr(e.id) for e in examples[1:6]) + " and 4 more" in message
    assert "--on-missing skip" in message


def test_skip_mode_marks_missing_items_with_none(tmp_path, demo):
    examples = demo.load("test")[:3]
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": examples[1].id, "persona": "The user is here."}])
    personas = build_persona_source("user", demo, persona_file=str(path), on_missing="skip").personas(examples, "rejected")
    assert [p.text for p in personas] == [None, "The user is here.", None]
    assert "skipped" in personas[0].provenance


@pytest.mark.parametrize("content, where, needle", [
    ('{"id": "a", "persona": "The user is ok."}\n{"id": "b", "persona": \n', ":2", "malformed JSON"),
    ('{"id": "a", "persona": "ok"}\n\n["not", "an", "object"]\n', ":3", "expected an object"),
    ('{"id": "a"}\n', ":1", "field 'persona' is missing"),
    ('{"id": "a", "persona": "  "}\n', ":1", "field 'persona' is empty"),
    ('{"persona": "x"}\n', ":1", "needs an 'id'"),
    ('{"id": "a", "persona": "x", "split": "both"}\n', ":1", "split' must be chosen or rejected"),
    ('{"id": "a", "persona": "x"}\n{"id": "a", "persona": "y"}\n', ":2", "item 'a' has two different personas (first at"),
])
def test_user_jsonl_errors_name_file_and_line(tmp_path, demo, content, where, needle):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError) as info:
        build_persona_source("user", demo, persona_file=str(path))
    assert str(info.value).startswith(f"{path}{where}: ") and needle in str(info.value)


def test_user_file_errors_other_formats(tmp_path, demo):
    cases = {
        "p.yaml": ("a: The user is A.\nb: [not, text]\n", ":2", "persona of item 'b' must be non-empty text"),
        "q.yaml": ("a: ok\n  b: : bad\n", ":2", "invalid YAML"),
        "p.csv": ("id,text\na,b\n", ":1", "needs a 'persona' column"),
        "q.csv": ("id,persona\na,ok\nb,\n", ":3", "field 'persona' is empty"),
        "p.txt": ("hello", "", "unsupported persona file type '.txt'"),
        "empty.jsonl": ("\n\n", "", "holds no personas"),
    }
    for name, (content, where, needle) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(UsageError) as info:
            build_persona_source("user", demo, persona_file=str(path))
        assert str(info.value).startswith(f"{path}{where}: ") and needle in str(info.value), (name, str(info.value))
    with pytest.raises(UsageError, match="persona file not found"):
        build_persona_source("user", demo, persona_file=str(tmp_path / "nope.jsonl"))


def test_user_single_persona_and_argument_errors(demo):
    examples = demo.load("test")[:3]
    personas = build_persona_source("user", demo, persona="The user is a retired teacher.").personas(examples, "chosen")
    assert {p.text for p in personas} == {"The user is a retired teacher."}
    with pytest.raises(UsageError, match="either --persona-file or --persona"):
        build_persona_source("user", demo, persona="x", persona_file="y.jsonl")
    with pytest.raises(UsageError, match="needs --persona-file PATH or --persona"):
        build_persona_source("user", demo)
    with pytest.raises(UsageError, match="--persona is empty"):
        build_persona_source("user", demo, persona="  ")
    with pytest.raises(UsageError, match="--on-missing must be one of error, skip"):
        build_persona_source("user", demo, persona="x", on_missing="ignore")


# ---- runner and CLI --------------------------------------------------------------------


def test_runner_leaves_out_items_without_a_persona(tmp_path, demo):
    from persona_eval.pipeline.personas import with_personas

    examples = demo.load("test")[:4]

    class Partial:
        def personas(self, examples, split):
            return [Persona(text=None if i % 2 else f"The user is {i}.", source="user") for i in range(len(examples))]

    kept, personas, skipped = with_personas(Partial(), "user", examples, "rejected")
    assert [e.id for e in kept] == [examples[0].id, examples[2].id]
    assert [p.text for p in personas] == ["The user is 0.", "The user is 2."]
    assert skipped == [examples[1].id, examples[3].id]

    class Nothing:
        def personas(self, examples, split):
            return [Persona(text=None, source="user") for _ in examples]

    with pytest.raises(UsageError, match="gave no persona for any of the 4 item"):
        with_personas(Nothing(), "user", examples, "rejected")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, expected", [
    ((None, None, None, None, None), (None, {})),
    ((None, "bm25", None, None, None), ("retrieved", {"retriever": "bm25"})),
    (("retrieved", "dense,model=x", None, None, None), ("retrieved", {"retriever": "dense,model=x"})),
    ((None, None, "p.jsonl", None, "skip"), ("user", {"persona_file": "p.jsonl", "on_missing": "skip"})),
    ((None, None, None, "The user is x.", None), ("user", {"persona": "The user is x."})),
    (("gold", None, None, None, None), ("gold", {})),
])
def test_persona_source_choice(args, expected):
    assert persona_source_choice(*args) == expected


@pytest.mark.parametrize("args, needle", [
    (("gold", "bm25", None, None, None), "--retriever applies to --persona-source retrieved"),
    (("retrieved", None, "p.jsonl", None, None), "--persona-file applies to --persona-source user"),
    ((None, "bm25", None, "x", None), "use one kind"),
    ((None, None, None, None, "skip"), "--on-missing needs --persona-file"),
])
def test_persona_source_choice_conflicts(args, needle):
    with pytest.raises(UsageError, match=needle):
        persona_source_choice(*args)


def test_personas_command_writes_jsonl_with_provenance(tmp_path, fresh_cache):
    out = tmp_path / "personas.jsonl"
    result = invoke("personas", "--split", "chosen", "--retriever", "bm25", "--limit", "5", "-o", out)
    assert result.returncode == 0, result.stderr
    records = _read(out)
    assert len(records) == 5 and {r["split"] for r in records} == {"chosen"}
    assert all(r["persona_provenance"]["train_id"].startswith("demo-train-") for r in records)
    assert all(r["persona_source"] == "retrieved" and r["gold_persona"] for r in records)
    assert "retriever bm25 (k=1)" in result.stdout and "demo-test-001" in result.stdout


def test_personas_command_user_file_errors_exit_2_and_write_nothing(tmp_path):
    persona_file = _write_jsonl(tmp_path / "p.jsonl", [{"id": "demo-test-001", "persona": "The user is one."}])
    out = tmp_path / "personas.jsonl"
    result = invoke("personas", "--persona-file", persona_file, "--limit", "3", "-o", out)
    assert result.returncode == 2
    assert "2 of 3 item(s) have no rejected persona" in result.stderr and "'demo-test-002', 'demo-test-003'" in result.stderr
    assert not out.exists()
    result = invoke("personas", "--persona-file", persona_file, "--on-missing", "skip", "--limit", "3", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert [r["persona"] for r in _read(out)] == ["The user is one.", None, None]
    assert "2 without a persona" in result.stderr


# ---- end to end (embedded model) -------------------------------------------------------


def small_demo(folder: Path) -> Path:
    """The demo task with short generations, so the embedded model's run stays quick."""
    spec = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    spec["dataset"] = {k: str((DEMO_DIR / v).resolve()) for k, v in spec["dataset"].items()}
    spec["generation"]["max_new_tokens"] = 12
    spec["judge"]["generation"]["max_new_tokens"] = 48
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo-small.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.mark.slow
def test_run_with_retrieved_personas_end_to_end(tmp_path, embedded_model_dir):
    run_dir = tmp_path / "run"
    result = invoke("run", "--task", small_demo(tmp_path), "--persona-source", "retrieved", "--limit", "2",
                    "--output-dir", run_dir, "--quiet", "--bootstrap", "50")
    assert result.returncode == 0, result.stderr + result.stdout
    results = json.loads((run_dir / "results.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    for document in (results, config):
        source = document["persona_source"]
        assert source["name"] == "retrieved"
        assert source["identity"]["source"] == "retrieved" and source["identity"]["k"] == 1
        assert source["identity"]["retriever"]["name"] == "dense"
    generations = _read(run_dir / "generations.jsonl")
    assert len(generations) == 4
    for record in generations:
        assert record["persona_source"] == "retrieved"
        assert record["persona_provenance"]["train_id"].startswith("demo-train-")
        assert record["persona_provenance"]["retriever"]["name"] == "dense"
        assert record["persona_provenance"]["train_id"] != record["item_id"]


@pytest.mark.slow
def test_run_with_user_personas_skips_missing_items(tmp_path, embedded_model_dir):
    persona_file = _write_jsonl(tmp_path / "p.jsonl", [
        {"id": "demo-test-001", "persona": "The user is a student and prefers short answers."},
    ])
    run_dir = tmp_path / "run"
    result = invoke("run", "--task", small_demo(tmp_path), "--persona-file", persona_file, "--on-missing", "skip",
                    "--limit", "2", "--output-dir", run_dir, "--quiet", "--bootstrap", "50")
    assert result.returncode == 0, result.stderr + result.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["persona_source"]["name"] == "user"
    assert results["persona_source"]["skipped_items"] == ["demo-test-002"]
    assert results["config"]["items"] == 1
    assert {r["item_id"] for r in _read(run_dir / "generations.jsonl")} == {"demo-test-001"}
    assert {r["item_id"] for r in _read(run_dir / "judgments.jsonl")} == {"demo-test-001"}
