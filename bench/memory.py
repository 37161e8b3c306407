"""Peak memory of `persona-eval run` as the number of items grows (target: < 50 MB more from 1k to 10k items).

    python bench/memory.py [--sizes 1000,10000] [--latency-ms 2] [--words 60]

Each size is a fresh ``persona-eval run`` process with an empty cache: the test model and
the baseline are `file` backends (precomputed outputs of about ``--words`` words), the judge
is `gpt-4o` on a loopback OpenAI-compatible server in its own process that answers after
a fixed latency. The peak resident set size of the run process alone comes from
``os.wait4``; ``python -c pass`` and a run of 10 items are measured in the same session
for scale. Also reported: the on-disk size of the records, which grows linearly by design.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import reliability_support as rs  # noqa: E402


def peak_rss(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(peak RSS in MB, wall seconds, CPU seconds) of one child process."""
    usage = rs.measure_child(command, env, keep_stdout=False)
    return usage.peak_rss_mb, usage.wall_s, usage.cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--latency-ms", type=float, default=2.0)
    parser.add_argument("--words", type=int, default=60, help="about how long each precomputed response is")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="pe-bench-memory-"))
    largest = max(sizes)
    task = rs.write_task(work / "task", largest)
    test_outputs = rs.write_outputs(work / "test.json", largest, "test", words=args.words)
    base_outputs = rs.write_outputs(work / "base.json", largest, "baseline", words=args.words)
    report: dict = {"latency_ms": args.latency_ms, "words": args.words, "load_average_1m_start": round(os.getloadavg()[0], 2)}
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base_env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    report["python_pass_mb"] = round(peak_rss([sys.executable, "-c", "pass"], base_env)[0], 1)
    rows = {}
    with rs.ServerProcess("judge", latency_ms=args.latency_ms) as server:
        for size in [10, *sizes]:
            env = {**rs.cli_env(work / f"cache-{size}"), "PYTHONPYCACHEPREFIX": str(work / "pycache")}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            out = work / f"run-{size}"
            command = rs.cli_command(*rs.run_args(
                task, out, model=f"file:{test_outputs}", baseline=f"file:{base_outputs}",
                judge_model=f"openai:judge,base_url={server.base_url},max_concurrency=32", limit=size,
                extra=("--bootstrap", "1000")))
            rss, wall, cpu = peak_rss(command, env)
            records = sum((out / name).stat().st_size for name in ("generations.jsonl", "judgments.jsonl")) / 1e6
            judgments = sum(1 for _ in open(out / "judgments.jsonl"))
            assert judgments == size * 4, (size, judgments)
            rows[size] = {"peak_rss_mb": round(rss, 1), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                          "records_mb": round(records, 1)}
            print(f"{size:>6} items: peak RSS {rss:7.1f} MB; {wall:6.1f} s wall, {cpu:6.1f} s CPU; "
                  f"records on disk {records:6.1f} MB")
    report["runs"] = rows
    small, big = min(sizes), max(sizes)
    growth = rows[big]["peak_rss_mb"] - rows[small]["peak_rss_mb"]
    report.update(growth_mb=round(growth, 1), target_mb=50, ok=growth < 50,
                  per_item_kb=round(growth * 1024 / (big - small), 2),
                  load_average_1m_end=round(os.getloadavg()[0], 2))
    print(f"python -c pass: {report['python_pass_mb']} MB; 10 items: {rows[10]['peak_rss_mb']} MB")
    print(f"growth from {small} to {big} items: {growth:.1f} MB ({report['per_item_kb']} KB per item); "
          f"target < 50 MB: {'ok' if growth < 50 else 'MISSED'}")
    print(f"load average (1 min): {report['load_average_1m_start']} at the start, {report['load_average_1m_end']} at the end")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
