"""Cached, batched execution shared by the generation and judging stages.

`cached_map` looks every input up in the result cache, sends only the misses to the
backend in batches, stores each batch as soon as it returns and reports every result
through a callback (which writes the JSON Lines record and advances the progress bar).
A killed run therefore loses at most the batch in flight.

With ``overlap=True`` the next batch is computed in a worker thread while the results
of the previous one are stored and reported: for network backends the bookkeeping then
hides behind the requests. ``concurrent=N`` (with overlap) keeps up to N `compute`
calls running at once, for backends that allow it, so no batch boundary drains the
connection pool; the first batch always runs alone, so a backend that sets itself up
lazily does so once. Results are still stored in batch order; a killed run loses at
most the batches in flight.

With an `executor` that distributes the stage's `work` (``--executor ray``), the misses go to
the cluster instead of `compute`. This process still looks the cache up, dedups, and is the only
writer: each batch is stored in the cache the moment it arrives (in whatever order batches
finish), and reported through `on_result` in input order, exactly as a local run reports them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from persona_eval.errors import RunError
from persona_eval.storage.cache import ResultCache, cache_keys

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
    concurrent: int = 1,
    executor: Any = None,
    work: Any = None,
) -> dict[str, int]:
    """Run `compute` over the inputs the cache lacks; call `on_result(index, output, cached)` for all."""
    keys = cache_keys(stage, identity, (payload(item) for item in inputs))
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

    def report(index: int, output: Out) -> None:
        on_result(index, output, False)
        for follower in followers.get(keys[index], ()):
            on_result(follower, output, True)

    def finish(batch: list[int], outputs: list[Out]) -> None:
        if len(outputs) != len(batch):
            raise RunError(f"{stage}: backend returned {len(outputs)} results for {len(batch)} inputs")
        cache.put_many(stage, [(keys[i], encode(out)) for i, out in zip(batch, outputs)])
        for index, output in zip(batch, outputs):
            report(index, output)

    if todo and executor is not None and work is not None and executor.distributes(work):
        arrived: dict[int, Out] = {}
        reported = 0
        for positions, outputs in executor.map(work, [inputs[i] for i in todo], batch_size):
            cache.put_many(stage, [(keys[todo[p]], encode(out)) for p, out in zip(positions, outputs)])
            arrived.update(zip(positions, outputs))
            while reported in arrived:
                report(todo[reported], arrived.pop(reported))
                reported += 1
        if reported != len(todo):
            raise RunError(f"{stage}: the executor returned {reported} of {len(todo)} results")
    elif not overlap or len(batches) < 2:
        for batch in batches:
            finish(batch, compute([inputs[i] for i in batch]))
    else:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        in_flight = max(1, int(concurrent))
        pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix=f"persona-eval-{stage}")
        try:
            pending = deque([(batches[0], pool.submit(compute, [inputs[i] for i in batches[0]]))])
            following = 1
            while pending:
                batch, future = pending.popleft()
                outputs = future.result()
                while following < len(batches) and len(pending) < in_flight:
                    pending.append((batches[following], pool.submit(compute, [inputs[i] for i in batches[following]])))
                    following += 1
                finish(batch, outputs)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return {"total": len(inputs), "cached": len(inputs) - len(todo), "computed": len(todo)}
