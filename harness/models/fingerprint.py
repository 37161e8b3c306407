"""What pins a model's weights in an identity: a content fingerprint or the hub commit.

`weights_fingerprint` hashes the files of a local model or adapter folder that change what
comes out: weights, config, and the tokenizer files that hold the chat template and special
tokens. Each file's sha256 is memoized in ``<cache>/file-hashes.json`` by path, size and
mtime, so big weights hash once. `model_revision` gives ``sha256:...`` for a local folder,
``git:<commit>`` for a hub id, or ``unpinned:<revision>`` when no commit can be resolved.
A dry-run plan (`memo_read_only`, `planning`) prepares no model: a folder a first run would make
(`mark_unprepared`) has the revision ``unprepared`` there, and the plan says so.
Shared by the local generators (`hf`, `vllm`, `gguf`, `lm-eval`), the trainers and the retrievers.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

from persona_eval.errors import UsageError
from persona_eval.hashing import file_hash, stable_hash
from persona_eval.storage.files import cache_dir

logger = logging.getLogger(__name__)


# Everything in a model folder that changes what comes out: weights, config, and the
# tokenizer files that hold the chat template and the special tokens.
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".model", ".jinja")


_FINGERPRINT_NAMES = (
    "config.json", "adapter_config.json", "generation_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
)


# False inside `memo_read_only`: the dry-run plan computes identities but writes nothing.
_PERSIST_MEMO: contextvars.ContextVar[bool] = contextvars.ContextVar("persist_file_hashes", default=True)


@contextlib.contextmanager
def memo_read_only() -> Iterator[None]:
    """Within the block, new file hashes are computed but not written to the memo."""
    token = _PERSIST_MEMO.set(False)
    try:
        yield
    finally:
        _PERSIST_MEMO.reset(token)


def planning() -> bool:
    """True inside `memo_read_only`, i.e. in a dry-run plan: nothing may be prepared or written."""
    return not _PERSIST_MEMO.get()


# Local model folders that a first run prepares (the embedded model's converted copy) and a
# dry-run plan found missing: folder -> what it is. Their content hash cannot be known before.
_UNPREPARED: dict[str, str] = {}


def mark_unprepared(folder: str | os.PathLike, what: str) -> None:
    """Record that `folder` is made by the run's preparation, which this plan skips."""
    _UNPREPARED[str(folder)] = what


def unprepared_folders() -> dict[str, str]:
    """The marked folders that still do not exist (folder -> what it is)."""
    return {folder: what for folder, what in _UNPREPARED.items() if not Path(folder).exists()}


def _memo_hashes(paths: Sequence[Path]) -> list[str]:
    """sha256 of each file, memoized by path, size and mtime so big weights hash once."""
    memo_path = cache_dir() / "file-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    out, changed = [], False
    for path in paths:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_hash(path)
            changed = True
        out.append(memo[key])
    if changed and _PERSIST_MEMO.get():
        from persona_eval.storage.files import atomic_write_json

        atomic_write_json(memo_path, memo)
    return out


def weights_fingerprint(folder: Path) -> str:
    """Content hash of a local model (or adapter) folder: weights, config, tokenizer."""
    folder = Path(folder)
    if folder.is_file():
        return _memo_hashes([folder])[0][:16]
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and (p.suffix in _FINGERPRINT_SUFFIXES or p.name in _FINGERPRINT_NAMES)
    )
    if not files:
        raise UsageError(f"{folder} holds no model files (config.json, *.safetensors, ...)")
    return stable_hash(list(zip((p.name for p in files), _memo_hashes(files))), 16)


def model_revision(name_or_path: str, revision: str | None = None, *, trust_remote_code: bool = False) -> str:
    """What pins a model's weights: a content hash for a local folder, the commit for a hub id.

    The hub commit is the one the hub names for the revision (one request, no retries), or
    else the snapshot of config.json in the local hub cache (offline): the commit transformers
    would load. Asked of huggingface_hub directly: transformers (and torch with it) costs
    seconds to import, more than a dry-run plan may take, and its download retries wait half a
    minute on a machine without the network. When neither answers, the identity says
    "unpinned", so a cache entry is still tied to the name and requested revision, and the
    user can see it. (`trust_remote_code` does not change which commit is loaded.)
    """
    local = Path(os.path.expanduser(name_or_path))
    if local.exists():
        return f"sha256:{weights_fingerprint(local)}"
    if str(local) in _UNPREPARED:
        return "unprepared"  # only a dry-run plan sees this: the run prepares the folder first
    commit = _hub_commit(name_or_path, revision)
    if commit:
        return f"git:{commit}"
    return f"unpinned:{revision or 'main'}"


def _hub_commit(repo_id: str, revision: str | None) -> str | None:
    problem = None
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(repo_id, revision=revision, timeout=10).sha
        if sha:
            return sha
    except Exception as exc:  # noqa: BLE001 - offline, unknown or gated: the local cache may still know
        problem = exc
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
        if isinstance(cached, str):
            return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    except Exception as exc:  # noqa: BLE001
        problem = problem or exc
    if problem is not None:
        logger.warning("could not resolve the revision of %s: %s", repo_id, (str(problem).splitlines() or [""])[0])
    return None
