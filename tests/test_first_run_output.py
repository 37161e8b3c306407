"""What `persona-eval run` prints on stderr: only our own lines, on a first run and on later ones.

The slow tests run the real demo task on the embedded model in a subprocess (``--limit 1``) and
read stderr line by line: every line must be ours (the one-line preparation of the embedded model,
rich's final progress-bar lines; a non-terminal stderr gets no live bars), and nothing of the
libraries may show: no tqdm bar, no "Loading weights", no "[transformers]" log line, no Python
warning; loading a model with an adapter prints nothing either. ``--quiet`` leaves stderr empty:
the report is all there is, on stdout, and it ends with one usage line (calls, cached, tokens, no
cost without a price). The fast tests pin
the switches behind that (`persona_eval.display.quiet`): each is turned off around our call and
restored after it, so the libraries stay as loud as the user left them everywhere else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from persona_eval.display import quiet

REPO = Path(__file__).resolve().parents[1]

# Anything the libraries print: tqdm bars, their progress descriptions, transformers' log prefix, warnings.
THIRD_PARTY = ("%|", "it/s", "Loading weights", "Converting and de-quantizing", "Writing model shards",
               "[transformers]", "Warning", "warnings.warn")
PREPARING = re.compile(r"^preparing the embedded model \(first run only\) \.\.\. done in \d+ s$")
# rich's last frame of one of our bars: description, bar, done/total, elapsed, remaining.
BAR = re.compile(r"^(generate \w+ \(\w+\)|judge \w+) +[━╸╺ ]+ +\d+/\d+ +\d+:\d\d:\d\d +(\d+:\d\d:\d\d|-:--:--)$")
# The report's usage line (no --price: tokens only, never a cost); every count comes from the tokenizer.
USAGE = re.compile(r"^usage: generate 2 calls \(0 cached\) \d+ in / \d+ out tokens · "
                   r"judge 4 calls \(0 cached\) [\d.]+k? in / \d+ out tokens$")


def _env(**extra: str) -> dict[str, str]:
    """This session's environment without anything that would quiet the libraries behind our back."""
    drop = ("PERSONA_EVAL_LOAD_PLUGINS", "PERSONA_EVAL_STRICT_PLUGINS", quiet.QUIET_ENV, "TQDM_DISABLE",
            "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "PYTHONWARNINGS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    # One intra-op thread: on a shared 2-core box spinning OpenMP threads run far slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({"COLUMNS": "200", "NO_COLOR": "1", **extra})
    return env


def _run(out: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", "persona_eval.cli", "run", "--limit", "1", "--no-cache", "--output-dir", str(out), *extra],
        capture_output=True, text=True, env=_env(**env), cwd=out.parent, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "dPQ" in completed.stdout, completed.stdout
    return completed


def _lines(stderr: str) -> list[str]:
    # tqdm redraws with carriage returns: split on them too, so a bar cannot hide inside a line.
    return [line.rstrip() for line in re.split(r"[\r\n]", stderr) if line.strip()]


def _assert_only_ours(stderr: str, *, first_run: bool) -> None:
    for marker in THIRD_PARTY:
        assert marker not in stderr, stderr[-3000:]
    lines = _lines(stderr)
    strangers = [line for line in lines if not (BAR.match(line) or PREPARING.match(line))]
    assert not strangers, stderr[-3000:]
    assert sum(bool(PREPARING.match(line)) for line in lines) == (1 if first_run else 0), stderr[-3000:]


# -- the real run -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_later_run_prints_only_our_bars(embedded_model_dir, tmp_path):
    # The control: loaded by transformers itself, this model does draw its bar here, so the check can fail.
    loud = subprocess.run(
        [sys.executable, "-c", "import sys; from transformers import AutoModelForCausalLM; "
                               "AutoModelForCausalLM.from_pretrained(sys.argv[1])", str(embedded_model_dir)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "Loading weights" in loud.stderr
    completed = _run(tmp_path / "run")
    _assert_only_ours(completed.stderr, first_run=False)
    # rich's last frame of each bar, once; the bars never reach stdout, which holds the report.
    assert [BAR.match(line).group(1) for line in _lines(completed.stderr)] == [
        "generate test (pt)", "generate baseline (baseline)", "judge prometheus"], completed.stderr
    assert not [line for line in completed.stdout.splitlines() if BAR.match(line.rstrip())], completed.stdout
    assert [line for line in completed.stdout.splitlines() if line.startswith("usage:")] == [
        line for line in completed.stdout.splitlines() if USAGE.match(line.rstrip())], completed.stdout
    assert sum(bool(USAGE.match(line.rstrip())) for line in completed.stdout.splitlines()) == 1, completed.stdout


@pytest.mark.slow
def test_quiet_leaves_stderr_empty(embedded_model_dir, tmp_path):
    completed = _run(tmp_path / "run", "--quiet")
    assert completed.stderr == ""
    assert "personalization" in completed.stdout


@pytest.mark.slow  # converts the GGUF file again into a fresh cache: ~20 s to a minute
def test_a_first_run_shows_one_preparation_line(embedded_model_dir, tmp_path):
    cache = tmp_path / "cache"
    completed = _run(tmp_path / "run", PERSONA_EVAL_CACHE=str(cache))
    _assert_only_ours(completed.stderr, first_run=True)
    assert _lines(completed.stderr)[0].startswith("preparing the embedded model")
    # Converted in float32 and saved in bf16: byte for byte the copy every identity was recorded with,
    # whichever transformers converted it (the version stamp is pinned).
    fresh = cache / "models" / embedded_model_dir.name
    assert sorted(p.name for p in fresh.iterdir()) == sorted(p.name for p in embedded_model_dir.iterdir())
    for path in embedded_model_dir.iterdir():
        assert _sha256(fresh / path.name) == _sha256(path), path.name


def test_the_copy_carries_the_recorded_transformers_version_whatever_converted_it(tmp_path):
    # save_pretrained stamps the installed version; the identity hashes these files, so a newer
    # transformers on a fresh machine must not change them (5.25 changed nothing else).
    from persona_eval.plugins.generators.embedded import RECORDED_TRANSFORMERS, pin_recorded_version

    config = '{\n  "dtype": "bfloat16",\n  "transformers_version": "9.9.9",\n  "use_cache": true\n}\n'
    (tmp_path / "config.json").write_text(config)
    (tmp_path / "generation_config.json").write_text('{\n  "transformers_version": "5.25.0"\n}\n')
    pin_recorded_version(tmp_path)
    assert (tmp_path / "config.json").read_text() == config.replace("9.9.9", RECORDED_TRANSFORMERS)
    assert (tmp_path / "generation_config.json").read_text() == f'{{\n  "transformers_version": "{RECORDED_TRANSFORMERS}"\n}}\n'


@pytest.mark.slow
def test_loading_with_an_adapter_prints_nothing(embedded_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # making the adapter is the test's own business
        base = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
        get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    code = ("import sys; from persona_eval.plugins.generators.hf import HFGenerator; "
            "HFGenerator('embedded', device='cpu', adapter=sys.argv[1])._load()")
    completed = subprocess.run([sys.executable, "-c", code, str(tmp_path / "adapter")],
                               capture_output=True, text=True, env=_env(), timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stderr == ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the switches -------------------------------------------------------------------------


@pytest.fixture
def bars_on():
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    if hub_constants.HF_HUB_DISABLE_PROGRESS_BARS is not None:
        pytest.skip(f"{quiet.QUIET_ENV} was set when huggingface_hub was imported: it overrides every switch")
    before = transformers_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    transformers_logging.enable_progress_bar()
    yield transformers_logging, are_progress_bars_disabled
    if not before[0]:
        transformers_logging.disable_progress_bar()
    (enable_progress_bars if before[1] else disable_progress_bars)()


def test_library_bars_go_off_for_the_block_and_come_back(bars_on, capfd):
    import transformers.modeling_gguf_pytorch_utils as reader

    transformers_logging, hub_disabled = bars_on
    gguf_tqdm = reader.tqdm
    with quiet.library_bars_off():
        assert not transformers_logging.is_progress_bar_enabled() and hub_disabled()
        assert reader.tqdm is not gguf_tqdm
        for _ in reader.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass
        for _ in transformers_logging.tqdm(range(3), desc="Loading weights"):
            pass
    assert capfd.readouterr().err == ""
    assert transformers_logging.is_progress_bar_enabled() and not hub_disabled()
    assert reader.tqdm is gguf_tqdm
    # Outside the block the bars draw again: the check above can fail.
    for _ in transformers_logging.tqdm(range(3), desc="Loading weights"):
        pass
    assert "Loading weights" in capfd.readouterr().err


def test_library_bars_stay_off_when_they_were_off(bars_on):
    transformers_logging, hub_disabled = bars_on
    transformers_logging.disable_progress_bar()
    with quiet.library_bars_off():
        pass
    assert not transformers_logging.is_progress_bar_enabled() and hub_disabled()


def test_library_output_goes_to_our_log_and_comes_back(caplog):
    from transformers.utils import logging as transformers_logging

    library = transformers_logging.get_logger("transformers.modeling_utils")
    ours = logging.getLogger("persona_eval.test_first_run_output")
    root = logging.getLogger("transformers")
    seen: list[str] = []
    probe = logging.Handler()
    probe.emit = lambda record: seen.append(record.getMessage())  # stands in for transformers' stderr handler
    root.addHandler(probe)
    propagate = root.propagate
    try:
        with caplog.at_level(logging.INFO, logger=ours.name):
            with quiet.library_output_to(ours):
                library.warning("asked for bfloat16")
                warnings.warn("a deprecated thing", FutureWarning, stacklevel=1)
        assert seen == []
        assert [r.getMessage() for r in caplog.records] == [
            "transformers warning: asked for bfloat16", "FutureWarning: a deprecated thing"]
        assert probe in root.handlers and root.propagate == propagate
        # After the block transformers' own handlers get its records again, and warnings show again.
        library.warning("a user's model lacks weights")
        assert seen == ["a user's model lacks weights"]
        with pytest.warns(UserWarning, match="still visible"):
            warnings.warn("still visible", UserWarning, stacklevel=1)
    finally:
        root.removeHandler(probe)


def test_step_prints_one_line_unless_quiet(capsys):
    quiet.set_quiet(False)
    with quiet.step("preparing the embedded model (first run only)"):
        pass
    assert PREPARING.match(capsys.readouterr().err.rstrip("\n"))
    with pytest.raises(RuntimeError), quiet.step("preparing"):
        raise RuntimeError("disk full")
    assert capsys.readouterr().err == "preparing ... failed\n"
    quiet.set_quiet(True)
    try:
        with quiet.step("preparing"):
            pass
        assert capsys.readouterr().err == ""
    finally:
        quiet.set_quiet(False)


def test_quiet_lasts_one_cli_invocation(monkeypatch):
    from click.testing import CliRunner

    from persona_eval.cli import cli

    monkeypatch.setenv(quiet.QUIET_ENV, os.environ.get(quiet.QUIET_ENV, "1"))  # --quiet's setdefault is undone after
    quiet.quiet_library_progress()
    assert quiet.is_quiet()
    result = CliRunner().invoke(cli, ["validate", "--no-data", str(REPO / "tasks" / "demo" / "demo.yaml")])
    assert result.exit_code == 0, result.output
    assert not quiet.is_quiet()
