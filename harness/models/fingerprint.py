"""What pins a model's weights in an identity: a content fingerprint or the hub commit.

`weights_fingerprint` hashes the files of a local model or adapter folder that change what
comes out: weights, config, and the tokenizer files that hold the chat template and special
tokens. Each file's sha256 is memoized in ``<cache>/file-hashes.json`` by path, size and
mtime, so big weights hash once. `model_revision` gives ``sha256:...`` for a local folder,
``git:<commit>`` for a hub id, or ``unpinned:<revision>`` when no commit can be resolved.
Shared by the local generators (`hf`, `vllm`, `gguf`, `lm-eval`), the trainers and the retrievers.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

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
    if changed:
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

    The hub commit is read from transformers' resolution of config.json (the local hub
    cache when offline). When it cannot be resolved the identity says "unpinned", so a
    cache entry is still tied to the name and requested revision, and the user can see it.
    """
    local = Path(os.path.expanduser(name_or_path))
    if local.exists():
        return f"sha256:{weights_fingerprint(local)}"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
        commit = getattr(config, "_commit_hash", None)
    except Exception as exc:  # noqa: BLE001 - unresolvable is reported, loading will fail loudly later
        logger.warning("could not resolve the revision of %s: %s", name_or_path, str(exc).splitlines()[0])
        commit = None
    if commit:
        return f"git:{commit}"
    return f"unpinned:{revision or 'main'}"
