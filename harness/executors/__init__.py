"""Where the cache misses of a stage are computed: in this process (`local`) or on a Ray cluster (`ray`).

``--executor local`` (the default) is today's behaviour. ``--executor ray[,key=value...]`` sends
the misses of generation, judging and persona inference through Ray Data: a dataset of the
requests, ``map_batches`` over a pool of actors that each build the generator (or judge) from the
very spec this process built, so identities and cache keys are a local run's. The driver keeps
everything else: cache look-ups and dedup before, and after, every record and cache entry is
written by this process alone (see `persona_eval.pipeline.cached_map`).

`parse_executor` reads the option string once, before any folder is written; `Executor.prepare`
connects (the ray executor checks the address first, with a short timeout) before the run
directory exists. The interface and the local executor are in `base`, the work specs workers
build from in `work`, the ray executor in `ray_data` (and `vllm_ray` for ``vllm:`` specs); ray
itself is imported only there, when a run uses it.
"""

from __future__ import annotations

from typing import Any, Sequence

from persona_eval.errors import UsageError
from persona_eval.executors.base import Executor, LocalExecutor, RayOptions, distributable

__all__ = ["Executor", "LocalExecutor", "RayOptions", "parse_executor", "distributable"]

EXECUTORS = ("local", "ray")
# The help of every command's --executor option (run, judge, infer).
EXECUTOR_HELP = ("Where cache misses are computed: local (this process) or "
                 "ray[,address=auto|HOST:PORT|ray://HOST:PORT,replicas=N,cpus_per_replica=C,gpus_per_replica=G,batch_size=B]; "
                 "results are the same either way (docs/scale.md).")

# key -> (type, lowest value, what it means): the settings of `--executor ray,...`.
RAY_SETTINGS: dict[str, tuple[type, float, str]] = {
    "replicas": (int, 1, "actors working at once (each builds its own model)"),
    "cpus_per_replica": (float, 0.0, "CPUs Ray reserves per actor (and torch's thread count there)"),
    "gpus_per_replica": (float, 0.0, "GPUs Ray reserves per actor"),
    "batch_size": (int, 1, "requests per actor call (default: the backend's preferred batch)"),
}


def _ray_options(text: str, pairs: Sequence[str], option: str) -> RayOptions:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not key or not raw:
            raise UsageError(f"{option} {text!r}: {pair.strip()!r} is not key=value")
        if key in values:
            raise UsageError(f"{option} {text!r}: {key} is given twice")
        if key == "address":
            values[key] = raw
            continue
        if key not in RAY_SETTINGS:
            known = ", ".join(["address", *RAY_SETTINGS])
            raise UsageError(f"{option} {text!r}: unknown setting {key!r}; known: {known}")
        kind, low, _ = RAY_SETTINGS[key]
        try:
            value = kind(raw)
        except ValueError:
            raise UsageError(f"{option} {key}={raw!r}: expected {'an integer' if kind is int else 'a number'}") from None
        if kind is float and value != value or value < low or value > 10_000:  # NaN, negative, absurd
            raise UsageError(f"{option} {key}={raw!r}: must be between {low:g} and 10000")
        values[key] = value
    address = values.get("address")
    if address is not None:
        _check_address(address, option)
    return RayOptions(**values)


def _check_address(address: str, option: str) -> None:
    """`auto`, `local`, ``HOST:PORT`` or ``ray://HOST:PORT``; the port a number."""
    if address in ("auto", "local"):
        return
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{option} address={address!r}: expected auto, local, HOST:PORT or ray://HOST:PORT")


def parse_executor(text: str | None, *, option: str = "--executor") -> Executor:
    """``local`` or ``ray[,address=...,replicas=N,cpus_per_replica=C,gpus_per_replica=G,batch_size=B]``.

    Nothing connects here: a bad name, key or value is a one-line usage error before any work.
    """
    text = (text or "local").strip()
    name, *pairs = text.split(",")
    name = name.strip()
    if name == "local":
        if pairs:
            raise UsageError(f"{option} {text!r}: the local executor takes no settings")
        return LocalExecutor()
    if name != "ray":
        raise UsageError(f"{option} {name!r}: unknown executor; use local or ray[,address=...,replicas=N]")
    options = _ray_options(text, pairs, option)
    from persona_eval.executors.ray_data import RayExecutor

    return RayExecutor(options)
