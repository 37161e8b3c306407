"""Reading the paper's code (Pinafore/alignment-personalization) for the fidelity tests.

The repository is a bare git mirror (``PERSONA_EVAL_PAPER_REPO``, by default where this
workplace keeps it); files are read with ``git show HEAD:PATH``. Where it is absent, a test
that compares with it is skipped; the values themselves are pinned as literals elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PAPER_REPO = Path(os.environ.get("PERSONA_EVAL_PAPER_REPO", "/work/.mirror/Pinafore+alignment-personalization/repo"))


def paper_file(path: str) -> str:
    """The text of one file of the paper's code, or skip the test."""
    if not PAPER_REPO.exists() or shutil.which("git") is None:
        pytest.skip(f"the paper's code is not here ({PAPER_REPO}; set PERSONA_EVAL_PAPER_REPO)")
    shown = subprocess.run(["git", "-C", str(PAPER_REPO), "show", f"HEAD:{path}"], capture_output=True, timeout=60)
    if shown.returncode != 0:
        pytest.skip(f"{path} not in {PAPER_REPO}: {shown.stderr.decode(errors='replace').strip()}")
    return shown.stdout.decode("utf-8")
