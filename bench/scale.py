"""The ray executor against the local one, on the same generation workload (embedded model, greedy).

    python bench/scale.py [--prompts 96] [--max-new-tokens 48] [--rounds 1] [--part all|overhead|scaling]
                          [--address ADDR] [--check] [--json]

The workload is the demo task's persona-tailoring inputs (strategy `pt`), answered greedily by
``hf:embedded``, pushed through `cached_map` exactly as the generate stage pushes them (no result
cache, so every request is computed). Each configuration's time is one whole stage: for the ray
executor that includes making the dataset, starting the actors and loading the model in each; for
the local one the model is loaded anew too (`close_generators` between runs). Configurations are
timed in turn, best of ``--rounds``:

1. overhead: ``local`` (torch's threads on every core) against ``ray,replicas=1,cpus_per_replica=C``
   with C = every core; target: ray >= 0.9 of local throughput;
2. scaling: ``ray,replicas=2,cpus_per_replica=1`` against ``ray,replicas=1,cpus_per_replica=1``
   (one torch thread per replica; both with ``batch_size=8`` so they run the very same batches);
   target >= 1.6x on 2 cores.

Outputs are compared too (greedy: every configuration must give the local texts). Without
``--address`` a local Ray instance is started for the benchmark (outside the timings) with one CPU
per core. ``--check`` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# The very workload bench/generation.py times (this folder is on sys.path when a script here runs).
from generation import workload


def stage(requests, executor_text: str) -> tuple[float, list[str], int]:
    """One generate stage's cache misses through `cached_map`: (seconds, texts, generated tokens)."""
    from persona_eval.contracts.factories import build_generator, close_generators
    from persona_eval.contracts.records import GenRequest, GenResult
    from persona_eval.executors import parse_executor
    from persona_eval.executors.work import GenerateWork
    from persona_eval.pipeline.cached_map import cached_map
    from persona_eval.storage.cache import NullCache

    close_generators()  # every configuration loads the model itself, as a fresh run does
    executor = parse_executor(executor_text)
    generator = build_generator("hf:embedded")
    executor.prepare([generator])
    results: list[GenResult | None] = [None] * len(requests)

    def on_result(index, result, cached):
        results[index] = result

    started = time.perf_counter()
    cached_map(stage="generate", identity=generator.identity(), inputs=requests, payload=GenRequest.cache_input,
               compute=generator.generate, encode=lambda r: {"text": r.text}, decode=lambda d: GenResult(text=d["text"]),
               cache=NullCache(), batch_size=generator.preferred_batch_size, on_result=on_result,
               executor=executor, work=GenerateWork("hf:embedded"))
    seconds = time.perf_counter() - started
    return seconds, [r.text for r in results], sum(r.output_tokens or 0 for r in results)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--part", choices=("all", "overhead", "scaling"), default="all", help="which comparison to time")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)

    import ray

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    started = time.perf_counter()
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    cluster_start = time.perf_counter() - started
    cpus = int(ray.cluster_resources().get("CPU", cores))

    requests = workload(args.prompts, args.max_new_tokens)
    configs = {}
    if args.part in ("all", "overhead"):
        configs.update({"local": "local", f"ray 1x{cpus}cpu": f"ray,replicas=1,cpus_per_replica={cpus}"})
    if args.part in ("all", "scaling"):
        configs.update({"ray 1x1cpu": "ray,replicas=1,cpus_per_replica=1,batch_size=8",
                        "ray 2x1cpu": "ray,replicas=2,cpus_per_replica=1,batch_size=8"})
    best = {name: float("inf") for name in configs}
    texts: dict[str, list[str]] = {}
    tokens: dict[str, int] = {}
    for round_index in range(args.rounds):
        names = list(configs)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:  # a rotating order: drifting load hits all alike
            seconds, outputs, count = stage(requests, configs[name])
            best[name] = min(best[name], seconds)
            texts.setdefault(name, outputs)
            tokens.setdefault(name, count)
            print(f"  round {round_index + 1}: {name:<12} {seconds:7.2f} s", flush=True)
    ray.shutdown()

    rate = {name: tokens[name] / best[name] for name in configs}
    print(f"scale: {args.prompts} prompts, max_new_tokens {args.max_new_tokens}, greedy, hf:embedded, {cores} cores, "
          f"Ray cluster of {cpus} CPUs (started in {cluster_start:.1f} s, not timed), best of {args.rounds} round(s); "
          "each time is one whole stage, actor start-up and model load included; "
          f"load average at the end {os.getloadavg()[0]:.2f} (other processes share these cores)")
    reference = texts[next(iter(configs))]
    for name in configs:
        same = sum(a == b for a, b in zip(texts[name], reference))
        print(f"  {name:<12} {rate[name]:7.1f} tokens/s  ({tokens[name]} tokens in {best[name]:.2f} s; "
              f"{same}/{len(requests)} outputs identical to {next(iter(configs))}'s)")
    figures = {}
    if "local" in configs:
        figures["ray-1-replica/local"] = rate[f"ray 1x{cpus}cpu"] / rate["local"]
    if "ray 1x1cpu" in configs:
        figures["ray-2x1/ray-1x1"] = rate["ray 2x1cpu"] / rate["ray 1x1cpu"]
    targets = {"ray-1-replica/local": 0.9, "ray-2x1/ray-1x1": 1.6}
    missed = False
    for name, value in figures.items():
        ok = value >= targets[name]
        missed |= not ok
        print(f"  ratio {name:<20} {value:.3f}  (target >= {targets[name]}: {'met' if ok else 'MISSED'})")
    if args.json:
        print(json.dumps({"tokens_per_s": rate, "seconds": best, "tokens": tokens, "ratios": figures, "cores": cores,
                          "prompts": args.prompts, "max_new_tokens": args.max_new_tokens}))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
