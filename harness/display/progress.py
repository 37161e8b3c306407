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

logger = logging.getLogger("persona_eval.pipeline")


class Progress:
    """A rich progress display on stderr (silent when not a terminal and quiet)."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console

        self.enabled = enabled
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True)
        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, disable=not enabled, transient=False,
        )

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._progress.__exit__(*exc)

    def add(self, description: str, total: int, completed: int = 0):
        return self._progress.add_task(description, total=total, completed=completed)

    def advance(self, task_id, amount: int = 1) -> None:
        if self.enabled:  # --quiet: rich's bookkeeping cost ~40 us per record
            self._progress.advance(task_id, amount)
