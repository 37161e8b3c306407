"""Stable content hashes: the keys of the result cache, run folders, identities and indexes.

`canonical_json` writes an object as compact JSON with sorted keys (anything else as its
``str``), so `stable_hash`, its sha256 optionally cut to `length` hex digits, is the same for
equal data whatever the key order. `text_hash` hashes a string; `file_hash` a file's bytes,
read in 1 MiB blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


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
