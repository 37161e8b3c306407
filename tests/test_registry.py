"""The name registries: lazy targets, aliases, namespaced names, "did you mean", duplicates.

Fixture plugins (tests/plugin_fixtures) are loaded as real entry points; the global
plugin manager is rebuilt from the installed entry points after every test.
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

from support import PLUGIN_ENV, fixture_entry_points, restore_plugins  # noqa: E402

from persona_eval.cli import cli  # noqa: E402
from persona_eval.contracts import plugin_manager, registry  # noqa: E402
from persona_eval.errors import RunError, UnknownNameError, UsageError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugins(monkeypatch):
    original = {key: os.environ.get(key) for key in PLUGIN_ENV}
    for key in PLUGIN_ENV:
        monkeypatch.delenv(key, raising=False)

    def load(*names):
        return plugin_manager.load_plugins(entry_points=fixture_entry_points(*names))

    yield load
    restore_plugins(original)


def test_lazy_target_is_imported_only_when_used(plugins):
    plugins("good")
    assert "pe_fixture_lazy_target" not in sys.modules
    assert "fixture/coin" in registry.judges.names()
    entry = registry.judges.entry("fixture/coin")
    assert entry.target == "pe_fixture_lazy_target:CoinJudge" and entry.plugin == "good"
    assert "pe_fixture_lazy_target" not in sys.modules  # looking a name up imports nothing
    judge_class = registry.judges.get("fixture/coin")
    assert "pe_fixture_lazy_target" in sys.modules
    assert judge_class is sys.modules["pe_fixture_lazy_target"].CoinJudge
    assert registry.judges.get("fixture/coin") is judge_class  # resolved once


def test_builtin_model_libraries_are_lazy():
    """Filling every registry (what `persona-eval plugins` does) imports no model library."""
    code = (
        "import sys; from persona_eval.contracts import registry\n"
        "[r.names() for r in registry.ALL]; registry.task_paths()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'vllm', 'sentence_transformers', 'datasets', 'openai') if m in sys.modules)\n"
        "print(','.join(heavy) or 'none')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


def test_aliases_resolve_to_the_same_entry(plugins):
    plugins("good")
    coin = registry.judges.entry("fixture/coin")
    assert registry.judges.entry("fixture/flip") is coin
    assert registry.judges.entry("flip") is coin
    assert "flip" in registry.judges and "fixture/flip" in registry.judges
    assert registry.judges.entry("prometheus2") is registry.judges.entry("prometheus")
    assert registry.generators.entry("transformers") is registry.generators.entry("hf")
    assert registry.generators.entry("const").name == "fixture/const"
    # Aliases are not listed as names of their own.
    assert "flip" not in registry.judges.names()


def test_namespaced_names(plugins):
    plugins("good")
    assert registry.judges.entry("coin").name == "fixture/coin"  # a unique bare name finds its namespace
    generator = registry.generators.create("fixture/const", "hello", suffix="!")
    assert generator.generate([object()])[0].text == "hello!"


def test_ambiguous_bare_name_is_refused(plugins):
    plugins("good", "other_namespace")
    with pytest.raises(UnknownNameError) as info:
        registry.judges.entry("coin")
    message = str(info.value)
    assert "unknown judge 'coin'" in message and "fixture/coin" in message and "other/coin" in message
    assert registry.judges.entry("other/coin").plugin == "other_namespace"


@pytest.mark.parametrize(
    "registry_name, wrong, suggestion",
    [("judges", "prometeus", "prometheus"), ("generators", "hff", "hf"), ("persona_sources", "glod", "gold"),
     ("judges", "fixture/con", "fixture/coin")],
)
def test_unknown_names_get_did_you_mean(plugins, registry_name, wrong, suggestion):
    plugins("good")
    reg = getattr(registry, registry_name)
    with pytest.raises(UnknownNameError) as info:
        reg.entry(wrong)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert f"{wrong!r}" in message and "did you mean" in message and f"{suggestion!r}" in message.split("did you mean")[1]
    assert "\n" not in message


def test_unknown_name_without_close_match_lists_known_names(plugins):
    plugins()
    with pytest.raises(UnknownNameError) as info:
        registry.judges.entry("zzzzzz")
    message = str(info.value)
    assert "did you mean" not in message
    assert "prometheus" in message.split("known judges: ")[1].split(", ")


def test_unloadable_lazy_target_names_plugin_and_target(plugins):
    plugins("other_namespace")
    with pytest.raises(RunError) as info:
        registry.judges.get("other/broken-target")
    message = str(info.value)
    assert "'other/broken-target'" in message and "other_namespace" in message and "pe_fixture_no_such_module" in message


def test_factory_options_are_checked(plugins):
    plugins("good")
    with pytest.raises(UsageError, match="fixture/const.*does not accept"):
        registry.generators.create("fixture/const", "x", colour="red")


def test_duplicate_names_warn_and_keep_the_first(plugins, caplog):
    plugins("good", "duplicate")
    with caplog.at_level(logging.WARNING):
        judges = registry.judges.names()
        sources = registry.persona_sources.names()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("'prometheus'" in m and "'duplicate'" in m and "already registered by 'prometheus'" in m for m in warnings), warnings
    # Built-ins register first, then third-party plugins in entry-point name order.
    assert any("'fixture/coin' from plugin 'good'" in m and "already registered by 'duplicate'" in m for m in warnings), warnings
    assert registry.judges.entry("prometheus").plugin == "prometheus"
    assert registry.judges.entry("fixture/coin").plugin == "duplicate"
    assert judges.count("prometheus") == 1
    # An invalid name is that plugin's registration failure: a warning, the registry still fills.
    assert "gold" in sources and "not a valid name!" not in sources
    assert any("invalid persona source name" in m for m in warnings), warnings


# ---- through the CLI: a typo fails up front, before any model loads ---------------------


def _run_cli_in_subprocess(args, tmp_path):
    """Run the CLI's main() and report the exit code and whether torch/transformers got imported."""
    code = (
        "import sys\n"
        "from persona_eval.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "else:\n"
        "    code = 0\n"
        "print('EXIT', code, 'HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)


@pytest.mark.parametrize(
    "args, suggestion",
    [
        (["run", "--judge", "prometeus"], "'prometheus'"),
        (["run", "--model", "hff:embedded"], "'hf'"),
        (["run", "--judge-model", "hgf:embedded"], "'hf'"),
        (["run", "--persona-source", "glod"], "'gold'"),
    ],
)
def test_cli_typo_fails_before_any_model_loads(tmp_path, args, suggestion):
    out_dir = tmp_path / "run-out"
    completed = _run_cli_in_subprocess([*args, "--output-dir", str(out_dir), "--limit", "1"], tmp_path)
    assert completed.stdout.strip().endswith("EXIT 2 HEAVY []"), (completed.stdout, completed.stderr)
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: unknown") and "did you mean" in lines[0], completed.stderr
    assert suggestion in lines[0]
    assert not out_dir.exists()  # nothing half-written


def test_cli_ls_lists_registered_names(plugins, monkeypatch):
    plugins("good")
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(cli, ["ls", "judges"])
    assert result.exit_code == 0
    rows = [line for line in result.output.splitlines() if "fixture/coin" in line]
    assert rows and "fixture/flip" in rows[0] and "good" in rows[0]
