"""JSON Lines records that survive crashes.

Each record is written whole (one ``write`` of a full line) and flushed. On reading,
a torn last line left by a crash is dropped and the file is truncated back to the
last complete record; a malformed line elsewhere is an error naming file and line.

`read_keyed` reads a run folder's records by key (`GENERATION_KEY`, `JUDGMENT_KEY`): two
different records with one key are an error naming the line; an identical second record is
dropped and counted. "Identical" leaves out `NOT_CONTENT` (``cached``, ``attempts`` and timing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from persona_eval.errors import UsageError

logger = logging.getLogger(__name__)


def read_jsonl(path: str | os.PathLike, *, repair_tail: bool = False, skip_torn_tail: bool = False) -> list[dict[str, Any]]:
    return list(iter_jsonl(path, repair_tail=repair_tail, skip_torn_tail=skip_torn_tail))


def iter_jsonl(path: str | os.PathLike, *, repair_tail: bool = False, skip_torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines file; a malformed line is an error naming file and line.

    The torn last line a crash leaves is cut off the file with `repair_tail` (a resuming
    writer), or only passed over with `skip_torn_tail` (a reader that must not write).
    """
    for _, record in iter_numbered(path, repair_tail=repair_tail, skip_torn_tail=skip_torn_tail):
        yield record


def iter_numbered(path: str | os.PathLike, *, repair_tail: bool = False,
                  skip_torn_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSON Lines file, as `iter_jsonl` reads them."""
    path = Path(path)
    if not path.exists():
        return
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read: {exc.strerror or exc}", where=str(path)) from exc
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
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # Only an unterminated final line can be the torn tail of a crash.
            if is_last and repair_tail:
                with open(path, "r+b") as handle:
                    handle.truncate(good_end)
                return
            if is_last and skip_torn_tail:
                return
            detail = "nested too deeply" if isinstance(exc, RecursionError) else exc
            raise UsageError(f"malformed JSON Lines record: {detail}", where=f"{path}:{number}") from exc
        if is_last and repair_tail:
            # A complete object without its newline: keep it and finish the line.
            with open(path, "ab") as handle:
                handle.write(b"\n")
        good_end += len(raw) + 1
        yield number, record


# The fields of a run folder's records that name what a record is about: two records with the same
# key must say the same thing.
GENERATION_KEY = ("item_id", "role")
JUDGMENT_KEY = ("item_id", "criterion", "order", "judge", "judge_key")
# Fields that say how or when a record was obtained, not what it says: two records that differ
# only in these are the same record (one rebuilt from the cache has cached=true; a verdict judged
# again may have needed another number of attempts).
NOT_CONTENT = frozenset({"cached", "attempts", "seconds", "elapsed", "elapsed_s", "latency", "latency_s",
                         "time", "timestamp", "written_at"})


class KeyedRecords(dict):
    """Records by key, in the order of their first line; `dropped` counts identical duplicates left out."""

    dropped: int = 0


def _content(record: dict[str, Any]) -> bytes:
    """A fingerprint of what a record says (`NOT_CONTENT` left out)."""
    text = json.dumps({k: v for k, v in record.items() if k not in NOT_CONTENT}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def read_keyed(path: str | os.PathLike, fields: tuple[str, ...], *, required: tuple[str, ...] | None = None,
               transform: Callable[[dict[str, Any]], Any] | None = None, what: str = "record",
               repair_tail: bool = False, skip_torn_tail: bool = False) -> KeyedRecords:
    """The records of a JSON Lines file keyed by `fields`; a key seen twice must mean the same record.

    A second record with the same key that differs in any field outside `NOT_CONTENT` makes the
    file ambiguous: an error naming the key, the line and the first line. An identical one (a
    record written twice, e.g. by a crash between writing it and noting the progress) is dropped
    and counted (``.dropped``, and a warning). The first record of a key is kept, through
    `transform` when given (a slim form: only a fingerprint of the whole record stays in memory).
    `required` fields (default: all of `fields`) must be present; the others key as null.
    """
    path = Path(path)
    required = fields if required is None else required
    out = KeyedRecords()
    first: dict[tuple, tuple[int, bytes]] = {}
    for number, record in iter_numbered(path, repair_tail=repair_tail, skip_torn_tail=skip_torn_tail):
        lacking = [f for f in required if f not in record]
        if lacking:
            raise UsageError(f"{what} record lacks {lacking[0]!r}", where=f"{path}:{number}")
        key = tuple(_hashable(record.get(f)) for f in fields)
        content = _content(record)
        seen = first.get(key)
        if seen is None:
            first[key] = (number, content)
            out[key] = transform(record) if transform else record
            continue
        if seen[1] == content:
            out.dropped += 1
            continue
        named = ", ".join(f"{f} {record.get(f)!r}" for f in fields if record.get(f) is not None)
        earlier = next(r for n, r in iter_numbered(path, skip_torn_tail=True) if n == seen[0])
        differs = next((k for k in sorted(set(earlier) | set(record), key=str)
                        if k not in NOT_CONTENT and earlier.get(k) != record.get(k)), "?")
        raise UsageError(
            f"conflicting duplicate {what} record for {named}: differs from line {seen[0]} in field {differs!r}; "
            "the run folder is ambiguous (remove one of the two lines, or the run folder)", where=f"{path}:{number}",
        )
    if out.dropped:
        logger.warning("%s: %d identical duplicate %s record(s) dropped", path, out.dropped, what)
    return out


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else json.dumps(value, sort_keys=True, default=str)


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
