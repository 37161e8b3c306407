"""The generation cache: reruns generate nothing, identities never share entries, --no-cache, `cache clear`.

Backend calls are counted by a generator registered through a test plugin on the live
plugin manager (`counting:NAME`), exactly as a third-party backend registers. Each run
writes to a fresh run directory, so what a rerun skips comes from the result cache,
not from resuming the run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from persona_eval.contracts import plugin_manager, registry
from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenResult

CALLS: Counter = Counter()


class CountingGenerator(Generator):
    """Answers from its name and the prompt; counts every request it is asked to generate."""

    def __init__(self, model: str, **options):
        self.name = model
        self.options = options

    def identity(self):
        return {"backend": "counting", "model": self.name, **self.options}

    def generate(self, requests):
        CALLS[self.name] += len(requests)
        return [GenResult(text=f"{self.name} says: {r.prompt[-40:]}", finish_reason="stop", output_tokens=3) for r in requests]

    def choice_probs(self, requests, choices):
        return [{c: (0.75 if c == "A" else 0.25) for c in choices} for _ in requests]


class CountingPlugin:
    @hookimpl
    def register_generators(self, register):
        register("counting", CountingGenerator, description="test: counts backend calls")


@pytest.fixture
def counting(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("PERSONA_EVAL_CACHE", str(cache))
    manager = plugin_manager.get_plugin_manager()
    plugin = CountingPlugin()
    manager.register(plugin, name="test-counting")
    registry.reset_registries()
    CALLS.clear()
    yield cache
    from persona_eval.contracts.factories import close_generators

    close_generators()
    manager.unregister(plugin)
    registry.reset_registries()


def _run(out, model="counting:m1", *extra):
    from click.testing import CliRunner

    from persona_eval.cli import cli

    result = CliRunner().invoke(
        cli, ["run", "--model", model, "--judge-model", "counting:judge", "--limit", "2", "--quiet", "--json",
              "--bootstrap", "10", "--output-dir", str(out), *extra],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    return [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]


def _cli(cache, *args):
    env = {**os.environ, "PERSONA_EVAL_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "persona_eval.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_second_identical_run_generates_nothing(counting, tmp_path):
    first = _run(tmp_path / "a")
    assert CALLS["m1"] == 4  # two items, test and baseline strategies
    assert not any(r["cached"] for r in first)
    second = _run(tmp_path / "b")
    assert CALLS["m1"] == 4
    assert all(r["cached"] for r in second)
    assert sorted((r["item_id"], r["role"], r["response"]) for r in second) == \
        sorted((r["item_id"], r["role"], r["response"]) for r in first)


def test_another_model_never_hits_the_first_models_entries(counting, tmp_path):
    _run(tmp_path / "a", "counting:m1")
    other = _run(tmp_path / "b", "counting:m2")
    assert CALLS["m2"] == 4
    assert not any(r["cached"] for r in other)
    assert all(r["response"].startswith("m2 says:") for r in other)
    # Options are part of the identity too: same name, other parameters, other entries.
    _run(tmp_path / "c", "counting:m1,temperature_hint=1")
    assert CALLS["m1"] == 8


def test_seed_is_part_of_the_key(counting, tmp_path):
    _run(tmp_path / "a")
    _run(tmp_path / "b", "counting:m1", "--seed", "1")
    assert CALLS["m1"] == 8


def test_no_cache_neither_reads_nor_writes(counting, tmp_path):
    _run(tmp_path / "a", "counting:m1", "--no-cache")
    _run(tmp_path / "b", "counting:m1", "--no-cache")
    assert CALLS["m1"] == 8
    info = json.loads(_cli(counting, "cache", "info", "--json").stdout)
    assert info["entries"] == {}


def test_cache_info_and_clear(counting, tmp_path):
    _run(tmp_path / "a")
    completed = _cli(counting, "cache", "info", "--json")
    assert completed.returncode == 0, completed.stderr
    info = json.loads(completed.stdout)
    assert info["cache_dir"] == str(counting)
    assert info["entries"]["generate"] == 4 and info["entries"]["judge"] > 0
    assert info["results_db_bytes"] > 0
    human = _cli(counting, "cache", "info")
    assert "generate" in human.stdout and str(counting) in human.stdout

    cleared = _cli(counting, "cache", "clear", "--stage", "judge")
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    info = json.loads(_cli(counting, "cache", "info", "--json").stdout)
    assert info["entries"] == {"generate": 4}

    bad = _cli(counting, "cache", "clear", "--stage", "generation")
    assert bad.returncode == 2 and "unknown stage 'generation'" in bad.stderr

    assert _cli(counting, "cache", "clear").returncode == 0
    assert json.loads(_cli(counting, "cache", "info", "--json").stdout)["entries"] == {}
    again = _run(tmp_path / "b")
    assert CALLS["m1"] == 8 and not any(r["cached"] for r in again)


@pytest.mark.slow
def test_real_hf_backend_is_not_called_on_a_rerun(counting, tmp_path, monkeypatch, embedded_model_dir):
    """The same through the real `hf` backend: its generate is wrapped to count calls."""
    from persona_eval.plugins.generators.hf import HFGenerator

    original = HFGenerator.generate
    calls = Counter()

    def counted(self, requests):
        calls["hf"] += len(requests)
        return original(self, requests)

    monkeypatch.setattr(HFGenerator, "generate", counted)
    models = counting / "models"
    models.symlink_to(embedded_model_dir.parent, target_is_directory=True)
    first = _run(tmp_path / "a", "hf:embedded", "--limit", "1")
    assert calls["hf"] == 2 and all(r["response"] for r in first)
    second = _run(tmp_path / "b", "hf:embedded", "--limit", "1")
    assert calls["hf"] == 2 and all(r["cached"] for r in second)
    assert [r["response"] for r in second] == [r["response"] for r in first]
