"""Small shared helpers: stable hashing, atomic writes, cache and run folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


class LazyModule:
    """A module imported on its first attribute access.

    Every command, `persona-eval --help` included, imports all plugin modules (to collect
    their commands); a plugin that needs numpy or asyncio only when it runs binds
    ``np = LazyModule("numpy")`` instead of importing it at the top.
    """

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            import importlib

            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


# The Hugging Face libraries' own switch for their progress bars ("Loading weights", ...).
QUIET_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"


def quiet_library_progress() -> None:
    """For --quiet: the library progress bars go too (see `QUIET_ENV`), unless the user set the switch."""
    os.environ.setdefault(QUIET_ENV, "1")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def stable_hash(obj: Any, length: int | None = None) -> str:
    digest = hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
    return digest[:length] if length else digest


def text_hash(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def file_hash(path: str | os.PathLike, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    return digest[:length] if length else digest


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
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_slug(text: str, max_length: int = 48) -> str:
    """A file-name-safe slug: no separators, no '..', never empty."""
    slug = _UNSAFE.sub("-", text).strip("-.")
    slug = re.sub(r"\.{2,}", ".", slug)[:max_length].strip("-.")
    return slug or "x"
