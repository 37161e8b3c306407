"""Files written whole or not at all, file-name-safe slugs, and where the cache folder is.

`cache_dir` is where models, indexes and the result cache live (``PERSONA_EVAL_CACHE``
overrides the platform's user cache folder). `atomic_write_text` and `atomic_write_json`
write a temporary file beside the target, fsync it and rename it into place, so a crash or a
full disk never leaves a half-written result; errors name the target, not the temporary file.
`safe_slug` turns text into a file name for run folders and index folders: no separators, no
'..', never empty.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Where models, indexes and the result cache live (PERSONA_EVAL_CACHE overrides)."""
    override = os.environ.get("PERSONA_EVAL_CACHE")
    if override:
        path = Path(override).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("persona-eval"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a whole file or nothing: a crash never leaves a half-written result."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        # mkstemp creates 0600; results and leaderboards are meant to be shared like any file.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):  # e.g. a full disk: the previous file is intact
            raise _naming(exc, path) from exc
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error, naming the file the user knows (not a descriptor or temporary name)."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as strict JSON: NaN or Infinity (which JSON has no words for) is an error naming the file."""
    try:
        text = json.dumps(obj, indent=2, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError as exc:
        from persona_eval.errors import RunError

        raise RunError(f"not written: a value is not a finite number ({exc}); JSON has no NaN or Infinity",
                       where=str(path)) from exc
    atomic_write_text(path, text + "\n")


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_slug(text: str, max_length: int = 48) -> str:
    """A file-name-safe slug: no separators, no '..', never empty."""
    slug = _UNSAFE.sub("-", text).strip("-.")
    slug = re.sub(r"\.{2,}", ".", slug)[:max_length].strip("-.")
    return slug or "x"


def write_page(html: str, out_dir: str | os.PathLike, name: str = "index.html") -> Path:
    """Write ``out_dir/name`` whole or not at all (a rendered page: a leaderboard, a run view); returns its path."""
    from persona_eval.errors import UsageError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError("exists and is not a directory", where=str(out))
    target = out / name
    try:
        atomic_write_text(target, html)
    except OSError as exc:
        raise UsageError(f"cannot write the page: {exc.strerror or exc}", where=str(target)) from exc
    return target
