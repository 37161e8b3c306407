"""JSON Lines records that survive crashes.

Each record is written whole (one ``write`` of a full line) and flushed. On reading,
a torn last line left by a crash is dropped and the file is truncated back to the
last complete record; a malformed line elsewhere is an error naming file and line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from persona_eval.errors import UsageError


def read_jsonl(path: str | os.PathLike, *, repair_tail: bool = False, skip_torn_tail: bool = False) -> list[dict[str, Any]]:
    return list(iter_jsonl(path, repair_tail=repair_tail, skip_torn_tail=skip_torn_tail))


def iter_jsonl(path: str | os.PathLike, *, repair_tail: bool = False, skip_torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines file; a malformed line is an error naming file and line.

    The torn last line a crash leaves is cut off the file with `repair_tail` (a resuming
    writer), or only passed over with `skip_torn_tail` (a reader that must not write).
    """
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as handle:
        data = handle.read()
    good_end = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines)
        if not raw.strip():
            if not is_last:
                good_end += len(raw) + 1
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            # Only an unterminated final line can be the torn tail of a crash.
            if is_last and repair_tail:
                with open(path, "r+b") as handle:
                    handle.truncate(good_end)
                return
            if is_last and skip_torn_tail:
                return
            raise UsageError(f"malformed JSON Lines record: {exc}", where=f"{path}:{number}") from exc
        if is_last and repair_tail:
            # A complete object without its newline: keep it and finish the line.
            with open(path, "ab") as handle:
                handle.write(b"\n")
        good_end += len(raw) + 1
        yield record


class JsonlWriter:
    """Appends one record per line, flushed (and fsynced) as each one finishes."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")
        self._fsync = fsync

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        try:
            self._handle.write(line)
            self._handle.flush()
            if self._fsync:
                os.fsync(self._handle.fileno())
        except OSError as exc:  # a full disk: at worst a torn last line, repaired on resume
            raise self._naming(exc) from exc

    def sync(self) -> None:
        """Force what was written to disk: one fsync per batch for writers opened with fsync=False."""
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise self._naming(exc) from exc

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError as exc:
            raise self._naming(exc) from exc

    def __enter__(self) -> "JsonlWriter":
        return self

    def _naming(self, exc: OSError) -> OSError:
        """The same error, naming this file (a failed flush names no file)."""
        return OSError(exc.errno, exc.strerror or str(exc), str(self.path))

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.close()
        except OSError:
            # Closing flushes what a failed write left in the buffer, which fails the same way:
            # the first error is the one to report.
            if exc_type is None:
                raise
