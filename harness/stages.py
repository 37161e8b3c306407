"""Cached, batched execution shared by the generation and judging stages.

`cached_map` looks every input up in the result cache, sends only the misses to the
backend in batches, stores each batch as soon as it returns and reports every result
through a callback (which writes the JSON Lines record and advances the progress bar).
A killed run therefore loses at most the batch in flight.

With ``overlap=True`` the next batch is computed (in one worker thread, so still one
`compute` call at a time) while the results of the previous one are stored and
reported: for network backends the bookkeeping then hides behind the requests. A
killed run loses at most the two batches in flight.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from .cache import ResultCache, cache_key

In = TypeVar("In")
Out = TypeVar("Out")


def cached_map(
    *,
    stage: str,
    identity: Any,
    inputs: Sequence[In],
    payload: Callable[[In], Any],
    compute: Callable[[list[In]], list[Out]],
    encode: Callable[[Out], Any],
    decode: Callable[[Any], Out],
    cache: ResultCache,
    batch_size: int,
    on_result: Callable[[int, Out, bool], None],
    overlap: bool = False,
) -> dict[str, int]:
    """Run `compute` over the inputs the cache lacks; call `on_result(index, output, cached)` for all."""
    keys = [cache_key(stage, identity, payload(item)) for item in inputs]
    hits = cache.get_many(set(keys))
    misses: list[int] = []
    for index, key in enumerate(keys):
        if key in hits:
            on_result(index, decode(hits[key]), True)
        else:
            misses.append(index)
    # Identical inputs inside one run are computed once.
    unique: dict[str, int] = {}
    for index in misses:
        unique.setdefault(keys[index], index)
    followers: dict[str, list[int]] = {}
    for index in misses:
        if unique[keys[index]] != index:
            followers.setdefault(keys[index], []).append(index)
    todo = list(unique.values())
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), max(1, batch_size))]

    def finish(batch: list[int], outputs: list[Out]) -> None:
        if len(outputs) != len(batch):
            raise RuntimeError(f"{stage}: backend returned {len(outputs)} results for {len(batch)} inputs")
        cache.put_many(stage, [(keys[i], encode(out)) for i, out in zip(batch, outputs)])
        for index, output in zip(batch, outputs):
            on_result(index, output, False)
            for follower in followers.get(keys[index], ()):
                on_result(follower, output, True)

    if not overlap or len(batches) < 2:
        for batch in batches:
            finish(batch, compute([inputs[i] for i in batch]))
    else:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"persona-eval-{stage}")
        try:
            future = pool.submit(compute, [inputs[i] for i in batches[0]])
            for number, batch in enumerate(batches):
                outputs = future.result()
                if number + 1 < len(batches):
                    future = pool.submit(compute, [inputs[i] for i in batches[number + 1]])
                finish(batch, outputs)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return {"total": len(inputs), "cached": len(inputs) - len(todo), "computed": len(todo)}
