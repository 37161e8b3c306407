"""The `hf` generator: Hugging Face transformers, batched, left-padded, chat templates.

Spec: ``hf:NAME_OR_PATH[,dtype=bfloat16][,device=cpu|cuda|auto][,adapter=DIR]
[,batch_size=8|auto][,revision=REV][,chat_template=true|false][,merge_adapter=true]
[,threads=auto|N]``.
``hf:embedded`` is the embedded SmolLM2-135M-Instruct. Requests are grouped by
generation parameters and sorted by length so each batch pads little; batch_size=auto
halves on out-of-memory. Greedy unless the temperature is above zero; sampling draws
each request's tokens from its own generator seeded by (seed, rendered input), so a
sampled answer does not depend on which other requests share its batch. On CPU,
threads=auto fits torch's thread count to the CPUs other processes leave free (see
`torch_threads`); the count changes speed only, so it is not part of the identity.

Also home to the helpers other local-weights backends share: `weights_fingerprint`
and `model_revision` (what goes into an identity), and `render_request`.
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

logger = logging.getLogger("persona_eval.hf")


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
