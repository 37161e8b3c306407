"""The run context: what every stage of a run shares, in one object.

A stage reads the task, the split, the seed, the cache and the progress display from the
context, and puts back what it learnt (the identities of the generators and judges it
built, the generators themselves for their statistics). `config.json` is written from the
context twice: once before any work, so a resumed run can check it is the same run, and
once at the end with every identity filled in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from persona_eval.scoring.usage import UsageTally
from persona_eval.storage.files import atomic_write_json


class NoProgress:
    """The progress display's interface, showing nothing (library use, tests)."""

    def add(self, description: str, total: int, completed: int = 0):
        return None

    def advance(self, task_id, amount: int = 1) -> None:
        return None


@dataclass
class RunContext:
    task: Any  # taskfile.loading.Task
    split: str | None
    seed: int
    out_dir: Path  # where this pipeline writes: the run directory, or a judge-* folder of one
    cache: Any  # storage.cache.ResultCache or NullCache
    progress: Any = field(default_factory=NoProgress)
    # What the stages learnt: identities by role ("test", "baseline", "judges"), generators by spec.
    identities: dict[str, Any] = field(default_factory=dict)
    generators: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    # Called with each generation and judgment record as it is written (the observer hook).
    on_record: Callable[[dict[str, Any]], None] | None = None
    # Where cache misses are computed (`persona_eval.executors`); None: in this process.
    executor: Any = None
    # Each judge's validated options by label, so a remote worker can build the very same judge.
    judge_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What the stages spent, per stage and model (the ``usage`` block of results.json).
    usage: UsageTally = field(default_factory=UsageTally)

    def write_config(self) -> None:
        atomic_write_json(self.out_dir / "config.json", self.config)

    def record_written(self, record: dict[str, Any]) -> None:
        if self.on_record is not None:
            self.on_record(record)
