"""One evaluation run: personas, generation (test and baseline), judging, results.

A run directory holds ``config.json`` (everything resolved: task and data hashes,
specs, identities, versions, seeds), ``generations.jsonl`` and ``judgments.jsonl`` (one
record per line, flushed as each finishes) and ``results.json`` (written atomically at
the end). The default directory name is derived from the resolved config, so rerunning
the same command resumes the same run: finished records are read back, a torn last
line from a crash is dropped, and only the missing work is done.
"""

from __future__ import annotations

import logging
from typing import Sequence

logger = logging.getLogger("persona_eval.pipeline")


def package_versions(extra: Sequence[str] = ()) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["persona-eval", "torch", "transformers", "prometheus-eval", "pluggy", "peft", "trl", *extra]
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
