"""Shared test set-up: an isolated cache per session, one shared copy of the embedded model.

Every session gets a fresh PERSONA_EVAL_CACHE (result cache, indexes), but its
``models/`` folder links to one machine-wide folder, so the embedded model is
converted from GGUF once per machine rather than once per test session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_MODELS = Path(os.environ.get("PERSONA_EVAL_TEST_MODELS", Path.home() / ".cache" / "persona-eval-test-models"))
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "paper-outputs"


def pytest_configure(config):
    import tempfile

    cache = Path(tempfile.mkdtemp(prefix="pe-test-cache-"))
    SHARED_MODELS.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(SHARED_MODELS, target_is_directory=True)
    os.environ["PERSONA_EVAL_CACHE"] = str(cache)
    config._persona_eval_cache = cache


def pytest_unconfigure(config):
    import shutil

    cache = getattr(config, "_persona_eval_cache", None)
    if cache is not None:
        (cache / "models").unlink(missing_ok=True)  # the shared models stay
        shutil.rmtree(cache, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The cached bf16 copy of the embedded model (converted once per machine)."""
    from persona_eval.plugins.generators.embedded import ensure_embedded_model

    return ensure_embedded_model()


@pytest.fixture
def paper_outputs() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared paper outputs not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def scripted():
    """The scripted test generator (`scripted:MODE`, see judging_support), registered for one test."""
    import judging_support as js

    plugin = js.install()
    yield js.ScriptedGenerator
    js.uninstall(plugin)
