"""`plan_infer`: the plan of `persona-eval infer --dry-run`, which infers nothing and writes nothing.

It resolves the command as `infer_file.infer_file` does before its first write (the pairs, the
exemplars, the PI model's spec and identity, the run key an existing output must carry), then
counts the first ask of every persona still to infer: how many the output file already holds
(resumed), how many the result cache holds (by the very keys `PersonaInferrer` looks up, read
through the dry-run's read-only cache), and what is left, with estimated tokens and the cost
where the user gave a price. Re-asks of personas that fail the screens come on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import UsageError


def _read_done(path: Path, id_key: str) -> dict[str, dict]:
    """`infer_file`'s resume read, without cutting a torn last line (a plan writes nothing)."""
    from persona_eval.storage.jsonl import read_jsonl

    done: dict[str, dict] = {}
    for record in read_jsonl(path, skip_torn_tail=True):
        item_id = record.get("persona_inference", {}).get("id", record.get(id_key))
        done[str(item_id)] = record
    return done


def plan_infer(pairs: Sequence[Any], output, config, *, names=None, use_cache: bool = True,
               prices: Sequence[str] = (), source: str | None = None) -> dict[str, Any]:
    """The dry-run plan of inferring both personas of every pair into `output` (an `InferConfig`)."""
    from persona_eval.models.fingerprint import memo_read_only

    with memo_read_only():
        return _plan_infer(pairs, output, config, names=names, use_cache=use_cache, prices=prices, source=source)


def _plan_infer(pairs, output, config, *, names, use_cache, prices, source) -> dict[str, Any]:
    from persona_eval.contracts.factories import build_generator
    from persona_eval.persona_inference import defaults
    from persona_eval.persona_inference.infer_file import _check_resumable, sidecar_path
    from persona_eval.persona_inference.inference import STAGE, PersonaInferrer, pair_jobs
    from persona_eval.persona_inference.pairs import FieldNames
    from persona_eval.persona_inference.prompt import load_exemplars
    from persona_eval.pipeline.plan import Lookups, finish_plan, input_tokens, open_cache, preparation_notes
    from persona_eval.scoring.usage import load_prices
    from persona_eval.storage.cache import cache_keys

    price_table = load_prices(prices)
    names = names or FieldNames()
    id_key = names.id or "id"
    output = Path(output)
    if output.exists() and output.is_dir():
        raise UsageError("is a directory; -o wants a .jsonl file", where=str(output))
    generator = build_generator(config.model, option="--model")
    cache, cache_info = open_cache(use_cache, None)
    try:
        inferrer = PersonaInferrer(
            generator, exemplars=load_exemplars(config.exemplars), k=config.k,
            params=defaults.gen_params(config.max_new_tokens, config.temperature, config.seed),
            max_attempts=config.max_attempts, max_response_chars=config.max_response_chars,
            use_prefix=config.use_prefix, cut=config.cut, cache=cache,
        )
        run_key = inferrer.run_key()
        pairs_by_id = {p.id: p for p in pairs}
        dropped_path = sidecar_path(output, "dropped")
        done, dropped_done = _read_done(output, id_key), _read_done(dropped_path, id_key)
        _check_resumable(done, pairs_by_id, run_key, output)
        _check_resumable(dropped_done, pairs_by_id, run_key, dropped_path)
        todo = [p for p in pairs if p.id not in done and p.id not in dropped_done]
        identity = generator.identity()
        lookups = Lookups(cache, use_cache)
        chunk = max(1, getattr(generator, "preferred_batch_size", 8) // 2)
        new_requests, cached = [], 0
        # In the chunks `infer_file` asks in: identical inputs within one are computed once.
        for start in range(0, len(todo), chunk):
            jobs = [job for p in todo[start : start + chunk] for job in pair_jobs(p.id, p.prompt, p.chosen, p.rejected)]
            requests = [inferrer.request(job, 1) for job in jobs]
            _, _, fresh = lookups.split(STAGE, cache_keys(STAGE, identity, (r.cache_input() for r in requests)))
            new_requests += [requests[j] for j in fresh]
            cached += len(requests) - len(fresh)
    finally:
        cache.close()
    counted, counted_by = input_tokens(generator, new_requests)
    row = {"stage": "persona_inference", "label": "personas (2 a pair)", "model": config.model, "calls": 2 * len(pairs),
           "new": len(new_requests), "cached": cached, "resumed": 2 * (len(pairs) - len(todo)),
           "input_tokens": counted, "input_source": counted_by,
           "output_tokens": sum(r.params.max_new_tokens for r in new_requests), "output_source": "upper bound (max_new_tokens)"}
    notes = [f"persona calls: the first ask of each persona; one that fails the format or protected-attribute screen "
             f"is asked again (up to {config.max_attempts} asks)"] if config.max_attempts > 1 else []
    return {
        "dry_run": True,
        "kind": "infer",
        "source": source or "pairs",
        "items": len(pairs),
        "output": str(output),
        "run_dir_exists": output.exists(),
        "run_key": run_key,
        "cache": cache_info,
        "rows": [row],
        **finish_plan([row], price_table),
        "notes": notes + preparation_notes(),
    }
