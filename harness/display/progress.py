"""The progress display every long command uses: rich bars on stderr, one per stage.

`run` and `judge` show a bar per generation role and judge, `infer` and `pi-accuracy` one
per pass, training one per adapter with the latest losses beside it. stdout stays free for
results (``--json``), and ``--quiet`` turns the display off.
"""

from __future__ import annotations

from typing import Sequence


class Progress:
    """A rich progress display on stderr; `fields` adds one text column per named field after the bar."""

    def __init__(self, enabled: bool = True, *, fields: Sequence[str] = (), refresh_per_second: float = 10):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.enabled = enabled
        self.fields = tuple(fields)
        self.console = Console(stderr=True)
        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), *(TextColumn(f"{{task.fields[{name}]}}") for name in self.fields),
            console=self.console, disable=not enabled, transient=False, refresh_per_second=refresh_per_second,
        )

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._progress.__exit__(*exc)

    def add(self, description: str, total: int, completed: int = 0, **fields: str):
        values = {name: fields.get(name, "") for name in self.fields}
        return self._progress.add_task(description, total=total, completed=completed, **values)

    def advance(self, task_id, amount: int = 1) -> None:
        if self.enabled:  # --quiet: rich's bookkeeping cost ~40 us per record
            self._progress.advance(task_id, amount)

    def update(self, task_id, *, completed: int | None = None, **fields: str) -> None:
        if self.enabled:
            self._progress.update(task_id, completed=completed, **fields)
