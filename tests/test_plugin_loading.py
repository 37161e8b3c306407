"""Plugin loading: good, broken (at import and at registration), strict mode, selection, observers.

In-process tests hand `load_plugins(entry_points=[...])` real `importlib.metadata.EntryPoint`
objects pointing at the modules in tests/plugin_fixtures; the CLI tests install a fixture
distribution (a dist-info folder on PYTHONPATH) so the real entry-point discovery finds it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "plugin_fixtures"))

from support import HERE as FIXTURES  # noqa: E402
from support import PLUGIN_ENV, fixture_entry_points, restore_plugins

from persona_eval.cli import cli  # noqa: E402
from persona_eval.contracts import plugin_manager, registry  # noqa: E402
from persona_eval.errors import UsageError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugins(monkeypatch):
    """Load fixture plugins; afterwards the real plugin manager is always rebuilt."""
    original = {key: os.environ.get(key) for key in PLUGIN_ENV}
    for key in PLUGIN_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COLUMNS", "250")

    def load(*names, builtins=True):
        return plugin_manager.load_plugins(entry_points=fixture_entry_points(*names, builtins=builtins))

    yield load
    restore_plugins(original)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_good_plugin_loads_next_to_builtins(plugins):
    plugins("good")
    infos = plugin_manager.plugin_infos()
    assert infos["good"].error is None and not infos["good"].builtin
    assert {"hf", "prometheus", "personas_gold"} <= {name for name, info in infos.items() if info.builtin}
    assert "fixture/coin" in registry.judges.names()
    assert "prometheus" in registry.judges.names()
    assert "fixture/const" in registry.generators.names()
    assert infos["good"].registered == {"judge": ["fixture/coin"], "generator": ["fixture/const"]}


def test_broken_import_is_a_warning_and_listed_as_failed(plugins, caplog):
    with caplog.at_level(logging.WARNING, logger="persona_eval.plugins"):
        plugins("broken_import", "good")
    infos = plugin_manager.plugin_infos()
    assert "exploded at import" in infos["broken_import"].error
    assert any("broken_import" in m and "exploded at import" in m for m in _warnings(caplog))
    # The rest still works: the built-ins and the good plugin registered their names.
    assert "prometheus" in registry.judges.names() and "fixture/coin" in registry.judges.names()

    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "broken_import" in line)
    assert "failed" in line and "RuntimeError" in line
    good = next(line for line in result.output.splitlines() if "│ good" in line)
    assert "fixture/coin" in good and "failed" not in good


def test_strict_mode_makes_a_broken_plugin_fatal(plugins, monkeypatch):
    monkeypatch.setenv("PERSONA_EVAL_STRICT_PLUGINS", "1")
    with pytest.raises(UsageError, match="broken_import.*exploded at import.*STRICT"):
        plugins("broken_import")


def test_registration_failure_is_a_warning(plugins, caplog):
    plugins("broken_register", "good")
    with caplog.at_level(logging.WARNING, logger="persona_eval.plugins"):
        judges = registry.judges.names()
    assert "fixture/coin" in judges
    assert any("broken_register" in m and "register_judges" in m for m in _warnings(caplog))
    info = plugin_manager.plugin_infos()["broken_register"]
    assert "exploded while registering judges" in info.error
    # The same plugin's other hook is unaffected.
    assert "fixture/survivor" in registry.generators.names()


def test_registration_failure_is_fatal_in_strict_mode(plugins, monkeypatch):
    plugins("broken_register")
    monkeypatch.setenv("PERSONA_EVAL_STRICT_PLUGINS", "1")
    with pytest.raises(UsageError, match="register_judges"):
        registry.judges.names()


def test_selection_loads_only_named_third_party_plugins(plugins, monkeypatch):
    monkeypatch.setenv("PERSONA_EVAL_LOAD_PLUGINS", "good, other_namespace")
    plugins("good", "broken_import", "duplicate", "other_namespace")
    infos = plugin_manager.plugin_infos()
    assert {"good", "other_namespace"} <= set(infos)
    assert "broken_import" not in infos and "duplicate" not in infos
    assert "pe_fixture_broken_import" not in sys.modules  # never even imported
    assert {"hf", "prometheus", "personas_gold"} <= set(infos)  # built-ins always load
    assert {"fixture/coin", "other/coin", "prometheus"} <= set(registry.judges.names())


def test_empty_selection_keeps_only_builtins(plugins, monkeypatch):
    monkeypatch.setenv("PERSONA_EVAL_LOAD_PLUGINS", "")
    plugins("good")
    infos = plugin_manager.plugin_infos()
    assert "good" not in infos
    assert infos and all(info.builtin for info in infos.values())
    assert "fixture/coin" not in registry.judges.names()


def test_raising_observers_are_logged_not_fatal(plugins, caplog):
    import pe_fixture_recorder

    pe_fixture_recorder.EVENTS.clear()
    plugins("observers", "recorder")

    class FakeRun:
        class task:
            name = "fixture"

    with caplog.at_level(logging.WARNING, logger="persona_eval.plugins"):
        plugin_manager.notify("on_run_start", run=FakeRun())
        plugin_manager.notify("on_sample_end", run=FakeRun(), record={"criterion": "quality"})
        plugin_manager.notify("on_run_end", run=FakeRun(), results={"metrics": {"dpq": 12.5}})
    messages = _warnings(caplog)
    for hook in ("on_run_start", "on_sample_end", "on_run_end"):
        assert any(f"observers.{hook}" in m and "RuntimeError" in m for m in messages), messages
    # The recorder registered after the raising plugin still saw every event.
    assert pe_fixture_recorder.EVENTS == [("start", "fixture"), ("sample", True), ("end", 12.5)]


def test_raising_observers_do_not_stop_a_real_run(plugins, tmp_path, caplog):
    """A whole run (model-free: the example plugin's echo generator and length judge) with bad observers."""
    sys.path.insert(0, str(REPO / "examples" / "persona-eval-example-plugin"))
    try:
        import importlib.metadata

        import pe_fixture_recorder

        pe_fixture_recorder.EVENTS.clear()
        entry_points = fixture_entry_points("observers", "recorder") + [
            importlib.metadata.EntryPoint(name="example", value="persona_eval_example", group="persona_eval")
        ]
        plugin_manager.load_plugins(entry_points=entry_points)
        from persona_eval.pipeline.run import Run, RunOptions

        options = RunOptions(
            model="example/echo:persona", baseline="example/echo:prompt", judges=("example/length",),
            judge_model="example/echo:prompt", limit=2, output_dir=str(tmp_path / "run"), bootstrap=50,
        )
        with caplog.at_level(logging.WARNING, logger="persona_eval.plugins"):
            results = Run(options, progress=False).execute()
    finally:
        sys.path.remove(str(REPO / "examples" / "persona-eval-example-plugin"))
        for module in [m for m in sys.modules if m.split(".")[0] == "persona_eval_example"]:
            del sys.modules[module]
    assert (tmp_path / "run" / "results.json").exists()
    assert results["metrics"]["items"] == 2
    samples = [e for e in pe_fixture_recorder.EVENTS if e[0] == "sample"]
    assert len(samples) == 4 + 8  # 2 items x 2 roles generated, 2 items x 2 criteria x 2 orders judged
    assert pe_fixture_recorder.EVENTS[0] == ("start", "demo")
    assert pe_fixture_recorder.EVENTS[-1] == ("end", results["metrics"]["dpq"])
    assert sum("observers.on_sample_end" in m for m in _warnings(caplog)) == 12


def test_plugin_commands_are_added(plugins):
    plugins("good")
    plugin_manager.call_each("register_commands", cli=cli)
    try:
        result = CliRunner().invoke(cli, ["fixture-hello"])
        assert result.exit_code == 0 and "hello from pe_fixture_good" in result.output
    finally:
        cli.commands.pop("fixture-hello", None)


# ---- through the real CLI, with a fixture distribution on PYTHONPATH ------------------


def _fixture_distribution(root: Path, name: str, entry_points: dict[str, str]) -> Path:
    """A minimal installed distribution: just the dist-info metadata importlib.metadata reads."""
    dist_info = root / f"{name.replace('-', '_')}-0.3.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[persona_eval]\n{lines}")
    return root


def _cli(args, env_extra, cwd=REPO):
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    env.update({"COLUMNS": "250", **env_extra})
    return subprocess.run(
        [sys.executable, "-m", "persona_eval.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


@pytest.fixture
def broken_dist(tmp_path):
    site = _fixture_distribution(
        tmp_path / "site", "pe-fixture-plugins", {"fixture_broken": "pe_fixture_broken_import", "fixture_good": "pe_fixture_good"}
    )
    return {"PYTHONPATH": os.pathsep.join([str(site), str(FIXTURES)])}


def test_cli_lists_a_broken_installed_plugin_as_failed(broken_dist):
    completed = _cli(["plugins"], broken_dist)
    assert completed.returncode == 0, completed.stderr
    assert "fixture_broken" in completed.stderr and "exploded at import" in completed.stderr
    rows = {line.split("│")[1].strip(): line for line in completed.stdout.splitlines() if line.startswith("│")}
    assert "failed" in rows["fixture_broken"] and "pe-fixture-plugins" in rows["fixture_broken"]
    assert "0.3.1" in rows["fixture_good"] and "fixture/coin" in rows["fixture_good"]
    assert "command: fixture-hello" in rows["fixture_good"] and "plugin_fixtures/tasks" in rows["fixture_good"]
    # The good plugin of the same distribution still works through the CLI.
    assert _cli(["fixture-hello"], broken_dist).stdout.strip() == "hello from pe_fixture_good"


def test_cli_strict_mode_exits_2_with_one_line(broken_dist):
    completed = _cli(["plugins"], {**broken_dist, "PERSONA_EVAL_STRICT_PLUGINS": "1"})
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("Error: ") and "fixture_broken" in lines[0] and "exploded at import" in lines[0]


def test_cli_selection_by_distribution_name(broken_dist):
    completed = _cli(["plugins"], {**broken_dist, "PERSONA_EVAL_LOAD_PLUGINS": "fixture_good"})
    assert completed.returncode == 0 and "exploded" not in completed.stderr
    assert "fixture_good" in completed.stdout and "fixture_broken" not in completed.stdout
    by_dist = _cli(["ls", "judges"], {**broken_dist, "PERSONA_EVAL_LOAD_PLUGINS": "pe-fixture-plugins"})
    # Selecting the distribution loads all of its entry points, the broken one included.
    assert "exploded at import" in by_dist.stderr and "fixture/coin" in by_dist.stdout
    assert by_dist.returncode == 0
