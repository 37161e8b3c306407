"""Backend plumbing: the hf `threads=` policy, quiet model loading, and the helpers the backends share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from persona_eval.contracts.model_spec import parse_model_spec
from persona_eval.contracts.records import GenParams
from persona_eval.display.quiet import QUIET_ENV, quiet_progress_bars
from persona_eval.errors import UsageError
from persona_eval.plugins.generators import torch_threads
from persona_eval.plugins.generators.common import (
    adapter_folder,
    check_engine_option,
    engine_class,
    model_location,
    sampler_kwargs,
)
from persona_eval.plugins.generators.hf import HFGenerator

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "tasks" / "demo"


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PERSONA_EVAL_LOAD_PLUGINS", "PERSONA_EVAL_STRICT_PLUGINS", QUIET_ENV, "OMP_WAIT_POLICY",
                        "GOMP_SPINCOUNT", *torch_threads.THREAD_ENV)}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", **extra})
    return env


@pytest.fixture
def torch_threads_restored():
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)
    torch_threads._last_set = None


# -- the threads option -------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, "many", True, 1.5])
def test_bad_thread_counts_fail_before_loading(embedded_model_dir, value):
    with pytest.raises(UsageError, match="threads must be a positive integer or 'auto'"):
        HFGenerator("embedded", device="cpu", threads=value)


def test_threads_come_from_the_spec_and_stay_out_of_the_identity(embedded_model_dir):
    spec = parse_model_spec("hf:embedded,threads=1")
    generator = HFGenerator(spec.model, device="cpu", **spec.options)
    assert generator.threads.setting == 1
    assert HFGenerator("embedded", device="cpu", threads="auto").threads.setting == "auto"
    assert generator.identity() == HFGenerator("embedded", device="cpu").identity()
    assert "threads" not in generator.identity()


@pytest.mark.parametrize("cpus, others, expected", [
    (2, None, 2), (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 3.5, 1), (8, 3.2, 5), (1, 0.0, 1),
])
def test_auto_uses_the_cpus_others_leave_free(cpus, others, expected):
    assert torch_threads.threads_for(cpus, others) == expected


def test_cpu_sampler_takes_this_process_out(tmp_path, monkeypatch):
    """Busy ticks on our CPUs minus our own CPU time, per wall second; other CPUs do not count."""
    stat = tmp_path / "stat"
    clock = {"cpu": 10.0, "wall": 100.0}
    monkeypatch.setattr(torch_threads.time, "process_time", lambda: clock["cpu"])
    monkeypatch.setattr(torch_threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(torch_threads, "PROC_STAT", stat)
    hz = os.sysconf("SC_CLK_TCK")

    def write(busy0, busy1, busy7):  # user ticks per CPU; idle and iowait must not count
        stat.write_text(
            f"cpu  0 0 0 0 0 0 0 0 0 0\n"
            f"cpu0 {busy0} 0 0 {9 * hz} {5 * hz} 0 0 0 0 0\n"
            f"cpu1 0 0 {busy1} 0 0 0 0 0 0 0\n"
            f"cpu7 {busy7} 0 0 0 0 0 0 0 0 0\nintr 1 2 3\n"
        )

    write(0, 0, 0)
    sampler = torch_threads.CpuSampler({0, 1})
    # Two seconds pass: our CPUs were busy 3 s in all, 1 s of it ours; cpu7 is not ours.
    write(2 * hz, 1 * hz, 50 * hz)
    clock.update(cpu=11.0, wall=102.0)
    assert sampler.others_busy(wait=False) == pytest.approx(1.0)
    # A window too short to measure gives no reading, unless it may be waited out.
    clock.update(wall=102.1)
    assert sampler.others_busy(wait=False) is None
    monkeypatch.setattr(torch_threads, "PROC_STAT", tmp_path / "missing")
    assert torch_threads.CpuSampler({0}).others_busy(wait=True) is None


def test_cpu_sampler_sees_a_cpu_burning_process():
    cpus = torch_threads.usable_cpus()
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # interpreter start-up
        sampler = torch_threads.CpuSampler(cpus)
        time.sleep(1.0)
        others = sampler.others_busy(wait=True)
    finally:
        burner.kill()
        burner.wait()
    # At least most of one CPU: the burner may share it with other work, never with us.
    assert others is not None and others >= 0.5


def test_explicit_count_wins_and_auto_backs_off_for_others(embedded_model_dir, monkeypatch, torch_threads_restored):
    torch = torch_threads_restored
    assert HFGenerator("embedded", device="cpu", threads=1).threads.apply() == 1
    assert torch.get_num_threads() == 1
    auto = HFGenerator("embedded", device="cpu").threads
    # Someone else changed the count after this module set it: auto stands down.
    torch.set_num_threads(3)
    assert auto.apply() is None and torch.get_num_threads() == 3
    torch_threads._last_set = None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert HFGenerator("embedded", device="cpu").threads.apply() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert torch_threads.ThreadPolicy("auto", "cuda:0").apply() is None


def test_auto_sets_a_count_within_the_cpus(embedded_model_dir, torch_threads_restored):
    torch = torch_threads_restored
    policy = HFGenerator("embedded", device="cpu").threads
    count = policy.apply()
    assert count is not None and 1 <= count <= len(torch_threads.usable_cpus())
    assert torch.get_num_threads() == count
    # A second call right away keeps the count rather than waiting for a new reading.
    started = time.monotonic()
    assert policy.apply() == count and time.monotonic() - started < torch_threads.MIN_WINDOW_S


@pytest.mark.slow  # four fresh interpreters importing torch: ~13 s on two cores
def test_auto_asks_openmp_to_sleep_only_before_torch_loads(embedded_model_dir):
    code = (
        "import os, sys\n"
        "from persona_eval.plugins.generators.hf import HFGenerator\n"
        "assert 'torch' not in sys.modules\n"
        "HFGenerator('embedded', device='cpu', threads=sys.argv[1] if sys.argv[1] == 'auto' else int(sys.argv[1]))\n"
        "print(os.environ.get('OMP_WAIT_POLICY'))\n"
    )

    def policy(threads, **env):
        completed = subprocess.run([sys.executable, "-c", code, threads], capture_output=True, text=True,
                                   env=_env(**env), timeout=120)
        assert completed.returncode == 0, completed.stderr
        return completed.stdout.strip()

    assert policy("auto") == "PASSIVE"
    assert policy("auto", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    assert policy("auto", GOMP_SPINCOUNT="1000") == "None"
    assert policy("2") == "None"


# -- quiet loading ------------------------------------------------------------------------


def test_quiet_switch_turns_transformers_bars_off(monkeypatch):
    from transformers.utils import logging as transformers_logging

    monkeypatch.delenv(QUIET_ENV, raising=False)
    transformers_logging.enable_progress_bar()
    assert quiet_progress_bars() is False and transformers_logging.is_progress_bar_enabled()
    monkeypatch.setenv(QUIET_ENV, "1")
    try:
        assert quiet_progress_bars() is True
        assert not transformers_logging.is_progress_bar_enabled()
    finally:
        monkeypatch.delenv(QUIET_ENV)
        transformers_logging.enable_progress_bar()


def _tiny_task(folder: Path) -> Path:
    """The demo task with 4-token answers and verdicts, so a run costs seconds."""
    text = (DEMO / "demo.yaml").read_text(encoding="utf-8")
    for old, new in (("name: demo", "name: quiet-demo"), ("data/test.jsonl", str(DEMO / "data" / "test.jsonl")),
                     ("data/train.jsonl", str(DEMO / "data" / "train.jsonl")),
                     ("max_new_tokens: 64", "max_new_tokens: 4"), ("max_new_tokens: 256", "max_new_tokens: 4")):
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "quiet-demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
def test_quiet_run_prints_no_loading_bars(embedded_model_dir, tmp_path):
    # Loaded by transformers itself, the model does print the bar here: the check below can fail.
    # (The hf backend keeps it off even without --quiet: tests/test_first_run_output.py.)
    loud = subprocess.run(
        [sys.executable, "-c", "import sys; from transformers import AutoModelForCausalLM; "
                               "AutoModelForCausalLM.from_pretrained(sys.argv[1])", str(embedded_model_dir)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr
    completed = subprocess.run(
        [sys.executable, "-m", "persona_eval.cli", "run", "--task", str(_tiny_task(tmp_path)), "--limit", "1",
         "--no-cache", "--output-dir", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "dPQ" in completed.stdout
    assert "Loading weights" not in completed.stderr and "it/s" not in completed.stderr, completed.stderr[-2000:]


# -- helpers the backends share -----------------------------------------------------------


def test_model_location(embedded_model_dir):
    assert model_location("embedded") == (str(embedded_model_dir), "embedded/SmolLM2-135M-Instruct")
    assert model_location("~/m") == (os.path.expanduser("~/m"), "~/m")
    assert model_location("org/name") == ("org/name", "org/name")


def test_adapter_folder(tmp_path):
    assert adapter_folder("hf", None) is None and adapter_folder("hf", "") is None
    with pytest.raises(UsageError, match=r"^x: adapter folder .* has no adapter_config.json"):
        adapter_folder("x", tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    assert adapter_folder("hf", tmp_path) == str(tmp_path.resolve())


def test_check_engine_option():
    types = {"n": int, "ratio": (int, float), "flag": bool}
    check_engine_option("b", "n", 3, types, ())
    check_engine_option("b", "ratio", 3, types, ())
    check_engine_option("b", "flag", False, types, ())
    with pytest.raises(UsageError, match="b: unknown option 'm'; known: flag, mine, n, ratio"):
        check_engine_option("b", "m", 1, types, ("mine",))
    for key, value in (("n", True), ("n", "3"), ("flag", 1), ("ratio", "x")):
        with pytest.raises(UsageError, match=f"b: option {key}=.* has the wrong type"):
            check_engine_option("b", key, value, types, ())


def test_engine_class_names_the_install_hint():
    assert engine_class("json", "JSONDecoder", "hint") is __import__("json").JSONDecoder
    with pytest.raises(UsageError, match="pip install it"):
        engine_class("persona_eval_no_such_engine", "Engine", "pip install it")


def test_sampler_kwargs():
    assert sampler_kwargs(GenParams(max_new_tokens=5, seed=9)) == {"max_tokens": 5, "temperature": 0.0}
    sampled = GenParams(max_new_tokens=5, temperature=0.7, seed=9)
    assert sampler_kwargs(sampled) == {"max_tokens": 5, "temperature": 0.7, "seed": 9}
    assert sampler_kwargs(sampled, 123)["seed"] == 123
