"""The result cache: SQLite in WAL mode, keyed by stage, identity, exact input and parameters.

A key is the sha256 of those parts, so a different model, adapter, prompt template or
judge order can never hit another's entry. Values are JSON. Writes commit at once, so a
killed run keeps everything it finished.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from persona_eval.hashing import canonical_json, stable_hash
from persona_eval.storage.files import cache_dir


def cache_key(stage: str, identity: Any, payload: Any) -> str:
    return stable_hash({"stage": stage, "identity": identity, "input": payload})


def cache_keys(stage: str, identity: Any, payloads: Iterable[Any]) -> list[str]:
    """`cache_key` of many inputs of one stage and identity, serializing the identity once.

    The text hashed is byte for byte the canonical JSON `cache_key` hashes (keys sorted:
    identity, input, stage), so both give the same keys.
    """
    import hashlib

    head = '{"identity":' + canonical_json(identity) + ',"input":'
    tail = ',"stage":' + canonical_json(stage) + "}"
    return [hashlib.sha256((head + canonical_json(p) + tail).encode("utf-8")).hexdigest() for p in payloads]


class ResultCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_dir() / "results.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, stage TEXT, value TEXT, created REAL)"
        )

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
        return found

    def get(self, key: str) -> Any | None:
        return self.get_many([key]).get(key)

    def put_many(self, stage: str, items: Iterable[tuple[str, Any]]) -> None:
        now = time.time()
        rows = [(key, stage, json.dumps(value, ensure_ascii=False), now) for key, value in items]
        if not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)", rows)

    def put(self, stage: str, key: str, value: Any) -> None:
        self.put_many(stage, [(key, value)])

    def clear(self, stage: str | None = None) -> int:
        with self._lock:
            if stage:
                cursor = self._db.execute("DELETE FROM entries WHERE stage = ?", (stage,))
            else:
                cursor = self._db.execute("DELETE FROM entries")
            return cursor.rowcount

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT stage, COUNT(*) FROM entries GROUP BY stage").fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()


class NullCache(ResultCache):
    """Used with --no-cache: remembers nothing."""

    def __init__(self):  # noqa: D107 - deliberately no database
        pass

    def get_many(self, keys):
        return {}

    def put_many(self, stage, items):
        return None

    def clear(self, stage=None):
        return 0

    def stats(self):
        return {}

    def close(self):
        return None
