"""The `openai` backend against a rate-limited server: adaptive concurrency vs a fixed one, vs the ideal time.

    python bench/rate_limit.py [--rps 100] [--requests 1000] [--burst 10] [--latency-ms 50]
                               [--concurrency 32] [--tokens-per-s 0]

A loopback server in a child process (its own GIL) answers chat completions after
``--latency-ms`` and meters them with a token bucket of ``--rps`` requests per second (size
``--burst``; optionally ``--tokens-per-s`` too): above it, 429 with retry-after, and on every
answer OpenAI's ``x-ratelimit-*`` headers. The same ``--requests`` distinct requests are sent by
one `generate` call in each mode, in this order, each against a fresh server:

- ``adaptive``: the default (`openai_rate.Governor`: AIMD on 429s, pauses for retry-after,
  pacing by the headers), up to ``--concurrency`` in flight;
- ``adaptive, 429s only``: the same against a server that sends no ``x-ratelimit-*`` headers
  (only 429 + retry-after): AIMD alone;
- ``fixed``: ``adaptive=false``, ``--concurrency`` always in flight, each 429 retried after its
  retry-after (the behaviour before adaptive concurrency): the baseline.

For each: wall time, its ratio to the ideal ``(requests - burst) / rps`` (the first ``burst`` go
at once; with ``--tokens-per-s``, the tokens' equivalent where slower; target: adaptive within 1.15),
the fraction of requests that were retried (target: a few percent at most), and the 429s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def responder(latency_ms: float):
    from openai_server_support import FixedResponder

    return FixedResponder("A short answer.", latency_ms=latency_ms)


def measure(args, *, adaptive: bool, headers: bool) -> dict:
    from openai_server_support import ChildServer, RateLimit

    from persona_eval.contracts.records import GenParams, GenRequest
    from persona_eval.plugins.generators.openai import OpenAIGenerator

    limit = RateLimit(requests_per_s=args.rps, burst=args.burst, headers=headers,
                      tokens_per_s=args.tokens_per_s or None)
    requests = [GenRequest(id=f"r{i}", prompt=f"Request number {i}: say something short.",
                           params=GenParams(max_new_tokens=16)) for i in range(args.requests)]
    with ChildServer(responder, args.latency_ms, rate_limit=limit) as server:
        generator = OpenAIGenerator("bench", base_url=server.base_url, max_concurrency=args.concurrency,
                                    adaptive=adaptive, max_retries=1000, timeout=30, total_timeout=3600,
                                    backoff=0.05, backoff_max=1.0)
        try:
            generator.generate(requests[:1])  # connect and warm up outside the clock (the bucket refills meanwhile)
            time.sleep(max(1.0, args.burst / args.rps))
            before = server.stats()
            started = time.perf_counter()
            results = generator.generate(requests[1:])
            wall = time.perf_counter() - started
            after = server.stats()
        finally:
            generator.close()
    assert len(results) == args.requests - 1 and all(r.text for r in results)
    stats = generator.stats()
    sent = len(requests) - 1
    retried = after["rate_limited"] - before["rate_limited"]
    ideal = max(0.0, sent - args.burst) / args.rps
    if args.tokens_per_s:  # the server's cost of a request: its prompt's words plus its max tokens
        cost = len(requests[1].prompt.split()) + requests[1].params.max_new_tokens
        ideal = max(ideal, max(0.0, sent * cost - args.tokens_per_s) / args.tokens_per_s)
    return {"wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal if ideal else float("nan"),
            "retried": retried, "retried_fraction": retried / sent, "sent": sent,
            "concurrency_min": stats["concurrency_min"], "decreases": stats["concurrency_decreases"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--burst", type=float, default=10.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    args = parser.parse_args()
    print(f"{args.requests} requests, server limit {args.rps:g} req/s (burst {args.burst:g}"
          + (f", {args.tokens_per_s:g} tokens/s" if args.tokens_per_s else "")
          + f"), latency {args.latency_ms:g} ms, max_concurrency {args.concurrency}")
    print("ideal time = (requests - burst) / rps (or the tokens' equivalent, if slower); "
          "retried = 429s answered / requests sent")
    print(f"{'mode':<24}{'wall s':>9}{'ideal s':>9}{'ratio':>8}{'retried':>10}{'429s':>7}{'min conc':>10}")
    rows = [("adaptive", True, True), ("adaptive, 429s only", True, False), ("fixed (baseline)", False, True)]
    for name, adaptive, headers in rows:
        m = measure(args, adaptive=adaptive, headers=headers)
        print(f"{name:<24}{m['wall_s']:>9.2f}{m['ideal_s']:>9.2f}{m['ratio']:>8.3f}"
              f"{100 * m['retried_fraction']:>9.1f}%{m['retried']:>7d}{m['concurrency_min']:>10d}", flush=True)


if __name__ == "__main__":
    main()
