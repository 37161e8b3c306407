"""One reader layer for tabular input files: every library error becomes one line naming the file.

`read_table(path)` returns ``[(where, record), ...]`` for ``.jsonl``/``.ndjson``, ``.json``,
``.csv``, ``.tsv`` and ``.parquet`` files; ``where`` is ``file:line`` (JSON Lines, CSV/TSV:
the first line of the record, so a quoted multi-line field reports where its row begins) or
``file[index]`` (JSON, Parquet). Task data (`taskfile.loading`), persona files
(`plugins.personas.user`), preference pairs (`persona_inference.pairs`) and released outputs
(`plugins.generators.file`) read through it and keep their own field mapping; `prefix` puts
a caller's tag (``"file: "``) in front of every message.

What is accepted and what is refused:

- text is UTF-8; a leading byte-order mark (Excel's "CSV UTF-8") is dropped, CRLF line ends are fine;
- a CSV/TSV field may be up to `CSV_FIELD_LIMIT` bytes (64 MiB; the csv module's default is
  128 KiB, which a long response can pass), a longer one is an error naming the line;
- a CSV/TSV row with more cells than the header, or a header naming a column twice, is an error
  (the csv module would file the extra cells under ``None`` or keep only the last column);
  a row with fewer cells leaves the missing ones ``None``; blank lines are skipped;
- JSON nested deeper than Python's recursion limit, a binary file with a ``.parquet`` name, an
  unreadable file, a folder, a broken symbolic link and a symbolic link loop are one-line errors.

Library imports (pyarrow) happen only when a Parquet file is read.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
from pathlib import Path
from typing import Any, Iterator

from persona_eval.errors import UsageError

TABLE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")
# The longest CSV/TSV field accepted: far above any prompt or response (a 1 MB response is
# legitimate), far below what would exhaust memory on one field.
CSV_FIELD_LIMIT = 64 << 20

Where = str
Records = list[tuple[Where, Any]]


def resolve_path(path: str | os.PathLike, what: str = "file", prefix: str = "") -> Path:
    """``Path(path).resolve()``, with a symbolic link loop reported as one line instead of RuntimeError."""
    path = Path(path)
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # Python < 3.13 raises RuntimeError("Symlink loop ...")
        raise UsageError(f"{prefix}{what} is a symbolic link loop (too many levels of symbolic links)",
                         where=str(path)) from exc


def link_problem(path: str | os.PathLike) -> str | None:
    """Why a path that ``exists()`` calls missing is not simply missing: a link loop or a broken link."""
    path = Path(path)
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (too many levels of symbolic links)"
        if os.path.islink(path):
            return f"is a broken symbolic link (to {os.readlink(path)!r}, which does not exist)"
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            return f"cannot be read: {exc.strerror or exc}"
    return None


@contextlib.contextmanager
def _wrapped(path: Path, prefix: str) -> Iterator[None]:
    """Operating-system and decoding errors while reading `path`, as one line naming it."""
    try:
        yield
    except UsageError:
        raise
    except UnicodeDecodeError as exc:
        raise UsageError(f"{prefix}not UTF-8 text ({exc.reason})", where=str(path)) from exc
    except OSError as exc:
        problem = link_problem(path) if exc.errno == errno.ELOOP else None
        raise UsageError(f"{prefix}{problem or f'cannot read: {exc.strerror or exc}'}", where=str(path)) from exc


def read_bytes(path: str | os.PathLike, prefix: str = "") -> bytes:
    path = Path(path)
    with _wrapped(path, prefix):
        return path.read_bytes()


def read_text(path: str | os.PathLike, prefix: str = "") -> str:
    """The whole file as text (UTF-8, a leading byte-order mark dropped)."""
    path = Path(path)
    with _wrapped(path, prefix):
        return path.read_bytes().decode("utf-8-sig")


def parse_json(text: str, path: str | os.PathLike, prefix: str = "", message: str = "malformed JSON") -> Any:
    """A JSON document; an error names file:line."""
    try:
        return json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise UsageError(f"{prefix}{message}: {getattr(exc, 'msg', exc)}", where=f"{path}:{line}" if line else str(path)) from exc
    except RecursionError as exc:
        raise UsageError(f"{prefix}{message}: nested too deeply", where=str(path)) from exc


def read_jsonl_values(path: str | os.PathLike, prefix: str = "", message: str = "malformed JSON Lines record") -> Records:
    """(file:line, value) of every non-blank line; any JSON value (callers check for objects)."""
    path = Path(path)
    data = read_bytes(path, prefix)
    out: Records = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{prefix}not UTF-8 text ({exc.reason} at byte {exc.start} of the line)", where=where) from exc
        try:
            out.append((where, json.loads(text)))
        except ValueError as exc:
            raise UsageError(f"{prefix}{message}: {getattr(exc, 'msg', exc)}", where=where) from exc
        except RecursionError as exc:
            raise UsageError(f"{prefix}{message}: nested too deeply", where=where) from exc
    return out


def read_csv(path: str | os.PathLike, delimiter: str = ",", prefix: str = "") -> tuple[list[str], Records]:
    """(header, [(file:line, row dict)]) of a CSV/TSV file; ``line`` is the first line of the record."""
    path = Path(path)
    previous = csv.field_size_limit()
    csv.field_size_limit(CSV_FIELD_LIMIT)
    header: list[str] = []
    rows: Records = []
    line = 0
    try:
        with _wrapped(path, prefix), open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            try:
                for cells in reader:
                    start, line = line + 1, reader.line_num
                    if not cells:
                        continue
                    where = f"{path}:{start}"
                    if not header:
                        header = cells
                        twice = sorted({c for c in header if header.count(c) > 1})
                        if twice:
                            raise UsageError(f"{prefix}the header names column {twice[0]!r} twice", where=where)
                        continue
                    if len(cells) > len(header):
                        raise UsageError(f"{prefix}more cells than header columns ({len(cells)} > {len(header)})", where=where)
                    rows.append((where, {name: (cells[i] if i < len(cells) else None) for i, name in enumerate(header)}))
            except csv.Error as exc:
                where = f"{path}:{line + 1}"
                if "field larger than field limit" in str(exc):
                    raise UsageError(f"{prefix}a field is longer than {CSV_FIELD_LIMIT >> 20} MiB, the limit for a "
                                     "CSV/TSV field (an unclosed quote makes the rest of the file one field)", where=where) from exc
                raise UsageError(f"{prefix}malformed CSV: {exc}", where=where) from exc
    finally:
        csv.field_size_limit(previous)
    return header, rows


def read_parquet(path: str | os.PathLike, prefix: str = "") -> Records:
    path = Path(path)
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UsageError(f"{prefix}reading a .parquet file needs pyarrow: pip install pyarrow", where=str(path)) from exc
    with _wrapped(path, prefix):
        try:
            table = pq.read_table(path)
            rows = table.to_pylist()
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - ArrowInvalid, ArrowNotImplementedError, ...: all name the file
            detail = " ".join(str(exc).split())[:200]
            raise UsageError(f"{prefix}not a readable Parquet file ({type(exc).__name__}: {detail})", where=str(path)) from exc
    return [(f"{path}[{i}]", row) for i, row in enumerate(rows)]


def read_table(path: str | os.PathLike, *, prefix: str = "", jsonl_message: str = "malformed JSON Lines record",
               objects_only: bool = True) -> Records:
    """(where, record) of a .jsonl/.ndjson, .json, .csv, .tsv or .parquet file.

    A JSON file holds a list of objects (or ``{"data": [...]}``). With `objects_only` (the
    default) every JSON Lines record must be an object; otherwise callers check the values.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        records = read_jsonl_values(path, prefix, jsonl_message)
        if objects_only:
            for where, record in records:
                if not isinstance(record, dict):
                    raise UsageError(f"{prefix}{jsonl_message}: not a JSON object (got {type(record).__name__})", where=where)
        return records
    if suffix == ".json":
        data = parse_json(read_text(path, prefix), path, prefix)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UsageError(f"{prefix}a JSON data file must hold a list of objects", where=str(path))
        return [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    if suffix in (".csv", ".tsv"):
        return read_csv(path, "\t" if suffix == ".tsv" else ",", prefix)[1]
    if suffix == ".parquet":
        return read_parquet(path, prefix)
    raise UsageError(f"{prefix}unsupported file type {suffix or '(none)'!r} (use .jsonl, .json, .csv, .tsv or .parquet)",
                     where=str(path))
