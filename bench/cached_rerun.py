"""Wall time of a fully cached rerun of a 1,000-item run (2 criteria x 2 orders = 4,000 judgments).

    python bench/cached_rerun.py [--items 1000] [--repeat 3] [--profile out.prof]

The test model and the baseline are `file` backends (precomputed outputs), the judge is
`gpt-4o` on a loopback OpenAI-compatible server in its own process. The first run fills
an empty cache. Then, each as a fresh ``persona-eval run`` process, timed end to end:

- ``cached``: the same run into a new output folder: every generation and judgment comes
  from the cache and every record is written again (target < 3 s);
- ``resumed``: the same run into the finished folder: the records are read back and
  nothing is recomputed or rewritten;
- for scale, in the same session: ``python -c pass`` and ``persona-eval --help``.

``--profile`` runs the cached rerun once more in-process under cProfile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import reliability_support as rs  # noqa: E402


def wall_and_cpu(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child alone, its stdout); exits on failure."""
    usage = rs.measure_child(command, env)
    return usage.wall_s, usage.cpu_s, usage.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="timed reruns of each kind (the median is reported)")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the cached rerun in-process into this file")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pe-bench-cached-"))
    task = rs.write_task(work / "task", args.items)
    test_outputs = rs.write_outputs(work / "test.json", args.items, "test", words=120)
    base_outputs = rs.write_outputs(work / "base.json", args.items, "baseline", words=120)
    env = rs.cli_env(work / "cache")
    judgments = args.items * 4
    report: dict = {"items": args.items, "judgments": judgments, "load_average_1m": round(os.getloadavg()[0], 2)}
    with rs.ServerProcess("judge") as server:
        def run_command(out: Path) -> list[str]:
            return rs.cli_command(*rs.run_args(task, out, model=f"file:{test_outputs}", baseline=f"file:{base_outputs}",
                                               judge_model=f"openai:judge,base_url={server.base_url}"))

        first_wall, first_cpu, first_out = wall_and_cpu(run_command(work / "first"), env)
        first = json.loads(first_out)
        served = server.stats()["served"]
        print(f"first run (empty cache): {first_wall:.2f} s wall, {first_cpu:.2f} s CPU, {served} judge requests")

        cached, resumed = [], []
        for attempt in range(args.repeat):
            out = work / f"cached-{attempt}"
            wall, cpu, stdout = wall_and_cpu(run_command(out), env)
            results = json.loads(stdout)
            assert results["metrics"] == first["metrics"], "the cached rerun changed the metrics"
            lines = sum(1 for _ in open(out / "judgments.jsonl"))
            assert lines == judgments, lines
            cached.append((wall, cpu))
            wall, cpu, stdout = wall_and_cpu(run_command(work / "first"), env)
            assert json.loads(stdout)["metrics"] == first["metrics"]
            resumed.append((wall, cpu))
        assert server.stats()["served"] == served, "a cached rerun sent judge requests"

    python_pass = [wall_and_cpu([sys.executable, "-c", "pass"], env)[:2] for _ in range(args.repeat)]
    help_runs = [wall_and_cpu(rs.cli_command("--help"), env)[:2] for _ in range(args.repeat)]
    median = lambda pairs, i: statistics.median(p[i] for p in pairs)  # noqa: E731
    cached_wall, cached_cpu = median(cached, 0), median(cached, 1)
    report.update(
        first_run_s=round(first_wall, 3), first_run_cpu_s=round(first_cpu, 3),
        cached_rerun_s=round(cached_wall, 3), cached_rerun_cpu_s=round(cached_cpu, 3),
        resumed_rerun_s=round(median(resumed, 0), 3), resumed_rerun_cpu_s=round(median(resumed, 1), 3),
        python_pass_s=round(median(python_pass, 0), 3), help_s=round(median(help_runs, 0), 3),
        help_cpu_s=round(median(help_runs, 1), 3),
        cached_over_first=round(cached_wall / first_wall, 3), cached_over_help=round(cached_wall / median(help_runs, 0), 2),
        target_s=3.0, ok=cached_wall < 3.0,
    )
    print(f"cached rerun, new folder ({judgments} judgments + {2 * args.items} generations from the cache): "
          f"{cached_wall:.2f} s wall, {cached_cpu:.2f} s CPU (median of {args.repeat}); "
          f"{cached_wall / first_wall:.2f} x the first run; target < 3 s: {'ok' if cached_wall < 3 else 'MISSED'}")
    print(f"rerun of the finished folder (records read back): {median(resumed, 0):.2f} s wall, {median(resumed, 1):.2f} s CPU")
    print(f"for scale: python -c pass {median(python_pass, 0):.3f} s; persona-eval --help {median(help_runs, 0):.3f} s "
          f"({median(help_runs, 1):.3f} s CPU); the cached rerun is {cached_wall / median(help_runs, 0):.1f} x --help")
    print(f"load average (1 min) at the start: {report['load_average_1m']}, at the end: {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")

    if args.profile:
        import cProfile

        os.environ["PERSONA_EVAL_CACHE"] = str(work / "cache")
        from persona_eval.contracts.factories import close_generators
        from persona_eval.pipeline.run import Run, RunOptions

        with rs.ServerProcess("judge") as server:
            options = RunOptions(task=str(task), model=f"file:{test_outputs}", baseline=f"file:{base_outputs}",
                                 judges=("gpt-4o",), judge_model=f"openai:judge,base_url={server.base_url}",
                                 limit=0, output_dir=str(work / "profiled"), bootstrap=200)
            # A different port is a different judge identity: fill the cache for it first.
            Run(options, progress=False).execute()
            shutil.rmtree(work / "profiled")
            profiler = cProfile.Profile()
            profiler.enable()
            Run(options, progress=False).execute()
            profiler.disable()
            close_generators()
        profiler.dump_stats(str(args.profile))
        print(f"profile of the cached rerun written to {args.profile}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
