"""`infer_file`: the `persona-eval infer` pipeline, both personas of every pair into JSON Lines.

Records are written one by one as they finish, so rerunning the command resumes after a crash;
an output holding personas from another model, prompt or setting, or inferred from different
input text, is refused. Pairs with a dropped persona go to ``OUT.dropped.jsonl`` and the counts
to ``OUT.summary.json`` (`sidecar_path`, `summarize_outputs`). The optional Parquet copy and hub
push are in `export`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from persona_eval.contracts.interfaces import Generator
from persona_eval.errors import UsageError
from persona_eval.persona_inference import defaults
from persona_eval.persona_inference.inference import PersonaInferrer, pair_jobs
from persona_eval.persona_inference.prompt import load_exemplars


def sidecar_path(output: Path, name: str) -> Path:
    """OUT.jsonl -> OUT.<name>.jsonl / OUT.<name>.json next to it."""
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.stem
    suffix = ".json" if name == "summary" else ".jsonl"
    return output.with_name(f"{stem}.{name}{suffix}")


@dataclass
class InferConfig:
    model: str
    k: int = defaults.K
    exemplars: str | None = None
    max_attempts: int = defaults.MAX_ATTEMPTS
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    temperature: float = defaults.TEMPERATURE
    seed: int = 0
    max_response_chars: int = defaults.MAX_RESPONSE_CHARS
    use_prefix: bool = defaults.USE_PREFIX
    cut: str = defaults.CUT
    chosen_persona_field: str = "chosen_persona"
    rejected_persona_field: str = "rejected_persona"


def _check_resumable(done: dict[str, dict], pairs_by_id: dict[str, Any], run_key: str, path: Path) -> None:
    for item_id, record in done.items():
        meta = record.get("persona_inference") or {}
        if meta.get("run_key") != run_key:
            raise UsageError(
                f"holds personas from another model, prompt or setting (run key {meta.get('run_key')} vs {run_key}, item {item_id!r}); "
                "write to another -o or remove the file to start over", where=str(path),
            )
        pair = pairs_by_id.get(item_id)
        if pair is not None and meta.get("input_hash") != pair.input_hash():
            raise UsageError(
                f"item {item_id!r} in the output was inferred from different input text; write to another -o or remove the file",
                where=str(path),
            )


def _read_done(path: Path, id_key: str) -> dict[str, dict]:
    from persona_eval.storage.jsonl import read_jsonl

    done: dict[str, dict] = {}
    for record in read_jsonl(path, repair_tail=True):
        item_id = record.get("persona_inference", {}).get("id", record.get(id_key))
        done[str(item_id)] = record
    return done


def summarize_outputs(kept: Sequence[dict], dropped: Sequence[dict], stats: dict[str, int] | None = None) -> dict[str, Any]:
    """Counts over every persona in the output and dropped files (so a resumed run reports the whole file)."""
    counts = {
        "items": len(kept) + len(dropped),
        "items_kept": len(kept),
        "items_dropped": len(dropped),
        "personas": 0,
        "kept": 0,
        "dropped": 0,
        "dropped_protected": 0,
        "dropped_format": 0,
        "reasked": 0,
        "flagged_protected": 0,
        "flagged_adversarial": 0,
    }
    for record in list(kept) + list(dropped):
        meta = record.get("persona_inference", {})
        for side in ("chosen", "rejected"):
            info = meta.get(side)
            if not info:
                continue
            counts["personas"] += 1
            counts["kept" if info["status"] == "kept" else "dropped"] += 1
            if info["status"] != "kept":
                counts["dropped_protected" if (info.get("reason") or "").startswith("protected") else "dropped_format"] += 1
            flags = info.get("flags", {})
            counts["reasked"] += int(bool(flags.get("reasked")))
            counts["flagged_protected"] += int(bool(flags.get("protected")))
            counts["flagged_adversarial"] += int(bool(flags.get("adversarial")))
    if stats is not None:
        counts["requests_this_run"] = dict(stats)
    return counts


def infer_file(
    pairs: Sequence[Any],
    output: str | os.PathLike,
    config: InferConfig,
    *,
    input_info: dict[str, Any] | None = None,
    names=None,
    progress: bool = True,
    cache=None,
    generator: Generator | None = None,
    executor=None,
) -> dict[str, Any]:
    """Infer both personas of every pair into `output` (JSON Lines), resuming what is already there.

    `executor` (`persona_eval.executors`, prepared by the caller) computes the misses; None: here.
    """
    from persona_eval.contracts.factories import build_generator
    from persona_eval.display.progress import Progress
    from persona_eval.persona_inference.pairs import FieldNames
    from persona_eval.storage.files import atomic_write_json
    from persona_eval.storage.jsonl import JsonlWriter

    names = names or FieldNames()
    id_key = names.id or "id"
    output = Path(output)
    dropped_path = sidecar_path(output, "dropped")
    exemplars = load_exemplars(config.exemplars)
    params = defaults.gen_params(config.max_new_tokens, config.temperature, config.seed)
    if output.exists() and output.is_dir():
        raise UsageError("is a directory; -o wants a .jsonl file", where=str(output))
    if generator is None:
        generator = build_generator(config.model, option="--model")
    inferrer = PersonaInferrer(
        generator, exemplars=exemplars, k=config.k, params=params, max_attempts=config.max_attempts,
        max_response_chars=config.max_response_chars, use_prefix=config.use_prefix, cut=config.cut, cache=cache,
        executor=executor, spec=config.model,
    )
    run_key = inferrer.run_key()
    pairs_by_id = {p.id: p for p in pairs}
    done = _read_done(output, id_key)
    dropped_done = _read_done(dropped_path, id_key)
    _check_resumable(done, pairs_by_id, run_key, output)
    _check_resumable(dropped_done, pairs_by_id, run_key, dropped_path)
    todo = [p for p in pairs if p.id not in done and p.id not in dropped_done]
    model_identity = generator.identity()
    prompt_hash = inferrer.prompt.hash()
    chunk = max(1, getattr(generator, "preferred_batch_size", 8) // 2)
    if executor is not None:  # a cluster call has a start-up cost: fewer, larger chunks
        chunk = executor.chunk_items(chunk)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder: {exc.strerror}", where=str(output.parent)) from exc
    with JsonlWriter(output) as writer, JsonlWriter(dropped_path) as dropped_writer, Progress(progress) as bar:
        task = bar.add("infer personas", len(pairs), len(pairs) - len(todo))
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            jobs = [job for p in batch for job in pair_jobs(p.id, p.prompt, p.chosen, p.rejected)]
            outcomes = inferrer.infer(jobs)
            for index, pair in enumerate(batch):
                chosen, rejected = outcomes[2 * index], outcomes[2 * index + 1]
                record = dict(pair.record)
                meta: dict[str, Any] = {
                    "id": pair.id,
                    "model": config.model,
                    "model_identity": model_identity,
                    "prompt_hash": prompt_hash,
                    "run_key": run_key,
                    "k": config.k,
                    "input_hash": pair.input_hash(),
                    "chosen": chosen.metadata(),
                    "rejected": rejected.metadata(),
                }
                if pair.rewritten:
                    meta["original_fields"] = pair.rewritten
                replaced = {f: record[f] for f in (config.chosen_persona_field, config.rejected_persona_field) if f in record}
                if replaced:
                    meta["replaced_fields"] = replaced
                if id_key not in record or record.get(id_key) in (None, ""):
                    record[id_key] = pair.id
                # Derived text (flattened or split dialogues) goes under the mapped names, so a
                # task YAML with the same field mapping reads exactly what the personas explain.
                for role in ("prompt", "chosen", "rejected"):
                    name = getattr(names, role)
                    if name in pair.rewritten or name not in record:
                        record[name] = getattr(pair, role)
                record[config.chosen_persona_field] = chosen.text
                record[config.rejected_persona_field] = rejected.text
                record["persona_inference"] = meta
                if chosen.status == "kept" and rejected.status == "kept":
                    writer.write(record)
                else:
                    dropped_writer.write(record)
                bar.advance(task)
    from persona_eval.storage.jsonl import read_jsonl

    kept_records = read_jsonl(output)
    dropped_records = read_jsonl(dropped_path)
    if not dropped_records:
        dropped_path.unlink(missing_ok=True)
    summary = {
        "output": str(output),
        "dropped_file": str(dropped_path) if dropped_records else None,
        "input": input_info or {},
        "model": config.model,
        "model_identity": model_identity,
        "prompt_hash": prompt_hash,
        "run_key": run_key,
        "settings": {k: v for k, v in config.__dict__.items() if k != "model"},
        "counts": summarize_outputs(kept_records, dropped_records, inferrer.stats),
        "resumed": len(pairs) - len(todo),
    }
    atomic_write_json(sidecar_path(output, "summary"), summary)
    return summary
