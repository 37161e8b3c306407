"""Plugins that break while running a real `persona-eval run` (tests/test_plugin_loading.py covers listing them).

The plugins in tests/data/reliability_plugins are installed as entry points of a throw-away
distribution (a dist-info folder on PYTHONPATH) and the CLI runs as a subprocess:

- a plugin that raises at import and one that raises while registering are warnings: the
  run completes with the other plugins;
- a generator or judge that raises at call time, or a backend whose constructor raises,
  fails the run with exit 1 and one ``Error:`` line naming the backend or judge and its
  plugin; results.json is not written, and the result cache holds exactly what a clean
  run holds (nothing from the failed batch), so the rerun equals an uninterrupted run.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import reliability_support as rs

PLUGINS = Path(__file__).resolve().parent / "data" / "reliability_plugins"
ITEMS = 6


def _distribution(root: Path, entry_points: dict[str, str]) -> str:
    dist_info = root / "pe_rel_plugins-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pe-rel-plugins\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[persona_eval]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    return f"{root}:{PLUGINS}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin-failures")
    task = rs.write_task(root / "task", ITEMS)
    baseline = rs.write_outputs(root / "base.json", ITEMS, "baseline")
    flaky_only = _distribution(root / "site-flaky", {"rel_flaky": "pe_rel_flaky"})
    broken = _distribution(root / "site-broken", {"rel_broken_import": "pe_rel_broken_import",
                                                  "rel_broken_register": "pe_rel_broken_register",
                                                  "rel_flaky": "pe_rel_flaky"})
    return {"root": root, "task": task, "baseline": baseline, "flaky": flaky_only, "broken": broken}


def _args(setup, out: Path, model: str = "rel/flaky:writer") -> list[str]:
    return rs.run_args(setup["task"], out, model=model, baseline=f"file:{setup['baseline']}",
                       judge="rel/grumpy", judge_model="rel/flaky:unused")


def _run(setup, out: Path, cache: Path, site: str, *, model: str = "rel/flaky:writer", **env: str):
    return rs.cli(*_args(setup, out, model), cache=cache, env=rs.cli_env(cache, PYTHONPATH=site, **env))


def _cache_rows(cache: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(cache / "results.sqlite") as db:
        return {key: (stage, value) for key, stage, value in db.execute("SELECT key, stage, value FROM entries")}


def _content(path: Path, key_fields: tuple[str, ...]) -> dict:
    return {tuple(r[k] for k in key_fields): {k: v for k, v in r.items() if k != "cached"} for r in rs.records(path)}


@pytest.fixture(scope="module")
def reference(setup):
    root = setup["root"]
    completed = _run(setup, root / "reference", root / "cache-reference", setup["flaky"])
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout), _cache_rows(root / "cache-reference")


def test_import_and_registration_failures_are_warnings(setup, reference, tmp_path):
    completed = _run(setup, tmp_path / "out", tmp_path / "cache", setup["broken"])
    assert completed.returncode == 0, completed.stderr
    warnings = completed.stderr + completed.stdout
    assert "rel_broken_import" in warnings and "needs a library this machine does not have" in warnings
    assert "rel_broken_register" in warnings and "register_generators" in warnings
    assert not [line for line in completed.stderr.splitlines() if line.startswith("Error:")]
    assert json.loads(completed.stdout)["metrics"] == reference[0]["metrics"]


@pytest.mark.parametrize("failure,expected", [
    ({"PE_REL_FAIL_GENERATE": "2"},
     "generator 'rel/flaky:writer' (plugin 'rel_flaky') failed: RuntimeError: CUDA out of memory in batch 2"),
    ({"PE_REL_FAIL_COMPARE": "3"},
     "judge 'rel/grumpy' (plugin 'rel_flaky') failed: ConnectionError: judge backend went away at call 3"),
], ids=["generator-raises", "judge-raises"])
def test_call_time_failure_fails_the_run_in_one_line_and_keeps_the_cache_clean(setup, reference, tmp_path, failure, expected):
    expected_results, expected_cache = reference
    out, cache = tmp_path / "out", tmp_path / "cache"
    failed = _run(setup, out, cache, setup["flaky"], **failure)
    assert failed.returncode == 1, failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: {expected}"], failed.stderr
    assert not (out / "results.json").exists()
    # The cache holds only what a clean run would also hold, byte for byte.
    partial = _cache_rows(cache)
    assert partial and all(expected_cache.get(key) == row for key, row in partial.items())
    assert len(partial) < len(expected_cache)

    healed = _run(setup, out, cache, setup["flaky"])
    assert healed.returncode == 0, healed.stderr
    assert json.loads(healed.stdout)["metrics"] == expected_results["metrics"]
    assert _cache_rows(cache) == expected_cache
    reference_dir = setup["root"] / "reference"
    for name, key in (("generations.jsonl", ("item_id", "role")), ("judgments.jsonl", ("item_id", "criterion", "order"))):
        assert _content(out / name, key) == _content(reference_dir / name, key)


def test_a_backend_whose_constructor_raises_fails_in_one_line(setup, tmp_path):
    failed = _run(setup, tmp_path / "out", tmp_path / "cache", setup["flaky"], model="rel/flaky:writer,explode=true")
    assert failed.returncode == 1, failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert lines == ["Error: generator 'rel/flaky' (plugin 'rel_flaky') failed: ValueError: "
                     "explode=true: the flaky backend refuses to start"], failed.stderr
    assert not (tmp_path / "out" / "results.json").exists()
