"""The CLI's basics: a light `--help`, `persona-eval plugins`, and the example third-party plugin.

The example plugin (examples/persona-eval-example-plugin) is pip-installed into a temporary
folder once per module and put on PYTHONPATH for CLI subprocesses, exactly as a user's
`pip install` would make it visible: through its `persona_eval` entry point.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "persona-eval-example-plugin"
HEAVY = ("torch", "transformers", "vllm", "sentence_transformers", "datasets", "openai", "peft", "trl", "bm25s",
         "ray")
PLUGIN_ENV = ("PERSONA_EVAL_LOAD_PLUGINS", "PERSONA_EVAL_STRICT_PLUGINS")


def clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    env.update({"COLUMNS": "250", "NO_COLOR": "1", **extra})
    return env


def cli(*args, env=None, timeout=120, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "persona_eval.cli", *map(str, args)],
        capture_output=True, text=True, env=env or clean_env(), cwd=cwd, timeout=timeout,
    )


def imported_after(args: list[str], env=None) -> list[str]:
    """Heavy modules present in sys.modules after the CLI's main() ran with these arguments."""
    code = (
        "import sys\n"
        "from persona_eval.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env or clean_env(), cwd=REPO, timeout=120)
    assert completed.returncode == 0, completed.stderr
    marker = [line for line in completed.stdout.splitlines() if line.startswith("HEAVY=")]
    assert marker, completed.stdout
    found = marker[-1].removeprefix("HEAVY=")
    return found.split(",") if found else []


def table_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["judge", "--help"], ["infer", "--help"], ["plugins"],
                                  ["ls", "judges"], ["ls", "tasks"]])
def test_light_commands_import_no_model_library(args):
    assert imported_after(args) == []


def test_help_lists_the_core_commands():
    completed = cli("--help")
    assert completed.returncode == 0
    for command in ("run", "validate", "ls", "plugins"):
        assert re.search(rf"^\s+{command}\s", completed.stdout, re.MULTILINE), command


def test_plugins_lists_builtins_with_versions_and_names():
    from importlib.metadata import version

    completed = cli("plugins")
    assert completed.returncode == 0, completed.stderr
    rows = table_rows(completed.stdout)
    expected = {"hf (built-in)": "generator: hf", "prometheus (built-in)": "judge: prometheus",
                "personas_gold (built-in)": "persona source: gold", "builtin_tasks (built-in)": "task path: ",
                "embedded_model (built-in)": "command: download-default-model"}
    for plugin, registered in expected.items():
        assert plugin in rows, rows.keys()
        _, distribution, plugin_version, module, names = rows[plugin]
        assert distribution == "persona-eval" and plugin_version == version("persona-eval")
        assert module.startswith("persona_eval.plugins.")
        assert registered in names


# ---- the example third-party plugin -------------------------------------------------------


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """`pip install --no-deps --target` of the example plugin; a copy is built so the tree stays clean."""
    work = tmp_path_factory.mktemp("example-plugin")
    source = work / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)]
    if importlib.util.find_spec("setuptools") is not None:
        command[4:4] = ["--no-build-isolation", "--no-index"]  # build offline with the installed setuptools
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert list(target.glob("persona_eval_example_plugin-*.dist-info"))
    return target


@pytest.fixture
def with_example(example_site) -> dict[str, str]:
    return clean_env(PYTHONPATH=str(example_site))


def test_example_plugin_is_listed_with_its_names(with_example):
    completed = cli("plugins", env=with_example)
    assert completed.returncode == 0, completed.stderr
    rows = table_rows(completed.stdout)
    assert "example" in rows, rows.keys()
    _, distribution, plugin_version, module, names = rows["example"]
    assert (distribution, plugin_version, module) == ("persona-eval-example-plugin", "0.1.0", "persona_eval_example")
    assert "judge: example/length" in names and "generator: example/echo" in names and "command: example-hello" in names
    # Not loaded when another selection is made; built-ins stay.
    selected = cli("plugins", env={**with_example, "PERSONA_EVAL_LOAD_PLUGINS": "someone-else"})
    assert "example" not in table_rows(selected.stdout) and "hf (built-in)" in table_rows(selected.stdout)


def test_example_plugin_command(with_example):
    completed = cli("example-hello", "--name", "tester", env=with_example)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "hello tester, from persona-eval-example-plugin 0.1.0"
    assert imported_after(["example-hello"], env=with_example) == []


def test_example_plugin_unknown_name_suggests_the_namespaced_one(with_example, tmp_path):
    completed = cli("run", "--judge", "example/lenght", "--output-dir", tmp_path / "x", env=with_example)
    assert completed.returncode == 2
    assert "did you mean 'example/length'" in completed.stderr and len(completed.stderr.strip().splitlines()) == 1


def _length_verdict(criterion: str, persona: str, a: str, b: str) -> str:
    """The length judge's documented rule, restated independently of its code."""
    brief = re.search(r"\b(short|concise|brief|quick|to the point|[1-5]-item)\b", persona, re.IGNORECASE)
    la, lb = len(a.split()), len(b.split())
    if (la == 0) != (lb == 0):
        return "A" if lb == 0 else "B"
    if la == lb:
        return "A" if a <= b else "B"
    if criterion == "personalization" and brief:
        return "A" if la < lb else "B"
    return "A" if la > lb else "B"


def test_example_plugin_model_free_run_end_to_end(with_example, tmp_path):
    """The whole pipeline on the example's echo generator and length judge: no model at all."""
    out = tmp_path / "run"
    completed = cli(
        "run", "--model", "example/echo:persona", "--baseline", "example/echo:prompt", "--judge", "example/length",
        "--judge-model", "example/echo:prompt", "--limit", "6", "--split", "rejected", "--output-dir", out, "--quiet",
        env=with_example,
    )
    assert completed.returncode == 0, completed.stderr
    assert "dPQ" in completed.stdout
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(generations) == 12 and len(judgments) == 24
    by_key = {(g["item_id"], g["role"]): g for g in generations}
    for g in generations:
        if g["role"] == "test":  # the echo of the persona line the pt strategy put in the input
            assert g["response"] == " ".join(g["persona"].split()[: 64])
        else:
            assert "Persona:" not in g["input"]
    for j in judgments:
        test, base = by_key[(j["item_id"], "test")]["response"], by_key[(j["item_id"], "baseline")]["response"]
        a, b = (base, test) if j["order"] == "baseline_first" else (test, base)
        persona = by_key[(j["item_id"], "test")]["persona"]
        assert j["winner"] == _length_verdict(j["criterion"], persona, a, b), j
        assert j["raw"].endswith(f"[RESULT] {j['winner']}")
    results = json.loads((out / "results.json").read_text())
    assert results["identities"]["judges"]["example/length"]["judge"] == "example/length"
    assert results["identities"]["test"]["backend"] == "example/echo"
    # A deterministic judge never flips with the order unless the lengths tie.
    assert results["metrics"]["judge_health"]["tie_rate"] is not None


@pytest.mark.slow
def test_example_judge_with_the_embedded_model(with_example, tmp_path, embedded_model_dir):
    out = tmp_path / "run"
    completed = cli(
        "run", "--judge", "example/length", "--model", "hf:embedded", "--limit", "2", "--output-dir", out, "--quiet",
        # One intra-op thread: on a shared 2-core box two spinning OpenMP threads run ~10x slower.
        env={"OMP_NUM_THREADS": "1", **with_example}, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    assert "dPQ" in completed.stdout and "example/length" in completed.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["judges"] == ["example/length"]
    assert results["identities"]["test"]["model"].startswith("embedded/")
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 8 and all(j["judge"] == "example/length" and j["winner"] in ("A", "B") for j in judgments)
