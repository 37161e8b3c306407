"""Exports of an `infer` output: a Parquet copy and a push to a Hugging Face dataset repo.

`write_parquet` writes the file atomically, turning nested columns into JSON text when Arrow
cannot type them; `push_to_hub` needs `datasets` (the ``data`` extra) and makes the repo private
unless asked otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from persona_eval.errors import RunError, UsageError


def write_parquet(jsonl_path: Path, parquet_path: Path) -> int:
    """The JSON Lines output as Parquet, written atomically; nested columns fall back to JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from persona_eval.storage.jsonl import read_jsonl

    records = read_jsonl(jsonl_path)
    try:
        table = pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        flat = [{k: json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else v for k, v in r.items()} for r in records]
        table = pa.Table.from_pylist(flat)
    parquet_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = parquet_path.with_name(f".{parquet_path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, parquet_path)
    finally:
        tmp.unlink(missing_ok=True)
    return table.num_rows


def push_to_hub(jsonl_path: Path, repo_id: str, *, private: bool = True) -> None:
    try:
        import datasets
    except ImportError as exc:
        raise UsageError("--push-to-hub needs 'datasets': pip install 'persona-eval[data]'") from exc
    from persona_eval.storage.jsonl import read_jsonl

    records = read_jsonl(jsonl_path)
    try:
        datasets.Dataset.from_list(records).push_to_hub(repo_id, private=private)
    except Exception as exc:  # noqa: BLE001 - auth, network and hub errors alike
        raise RunError(f"push to the hub ({repo_id}) failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
