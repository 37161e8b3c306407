"""The on-disk cache of retriever indexes, so the same texts are indexed once per retriever.

`load_or_build_index` keeps each index under ``<cache>/indexes/`` in a folder named by the
retriever's identity and a hash of the indexed texts (`index_folder`). It is written to a
temporary folder and renamed into place, so a crash never leaves half an index that a later
run would trust; a damaged entry is rebuilt, and when another process finished the same index
first, theirs is kept. A retriever without `save_index` and `load_index` is just indexed,
uncached. The `retrieved` persona source calls it for its training prompts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from persona_eval.contracts.interfaces import Retriever
from persona_eval.hashing import stable_hash
from persona_eval.storage.files import cache_dir, safe_slug

logger = logging.getLogger(__name__)


INDEX_FORMAT = 1


def texts_hash(texts: Sequence[str]) -> str:
    return stable_hash(list(texts), 16)


def index_folder(retriever: Retriever, texts: Sequence[str]) -> tuple[Path, str]:
    """Where the index of these texts by this retriever lives, and its key."""
    identity = retriever.identity()
    key = stable_hash({"format": INDEX_FORMAT, "retriever": identity, "texts": texts_hash(texts)}, 20)
    name = safe_slug(str(identity.get("name", "retriever")), 24)
    return cache_dir() / "indexes" / f"{name}-{key}", key


def load_or_build_index(retriever: Retriever, texts: Sequence[str], *, describe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Index `texts`, reusing a cached index when the retriever can save one.

    Returns what happened: ``{"cache": "hit"|"built"|"uncached", "path": ..., "key": ...}``.
    """
    savable = callable(getattr(retriever, "save_index", None)) and callable(getattr(retriever, "load_index", None))
    if not savable:
        retriever.index(list(texts))
        return {"cache": "uncached", "path": None, "key": None}
    folder, key = index_folder(retriever, texts)
    meta_path = folder / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("key") != key or meta.get("count") != len(texts):
                raise ValueError("meta.json does not match this index")
            retriever.load_index(folder)
            if getattr(retriever, "size", len(texts)) != len(texts):
                raise ValueError("index size does not match the texts")
            return {"cache": "hit", "path": str(folder), "key": key}
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt, never trusted
            logger.warning("rebuilding the damaged index cache %s: %s", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    started = time.time()
    retriever.index(list(texts))
    seconds = time.time() - started
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        retriever.save_index(tmp)
        meta = {
            "key": key, "format": INDEX_FORMAT, "count": len(texts), "texts_hash": texts_hash(texts),
            "retriever": retriever.identity(), "seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(describe or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:
            # Another process finished the same index first; theirs is as good as ours.
            if not (folder / "meta.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"cache": "built", "path": str(folder), "key": key, "seconds": round(seconds, 3)}
