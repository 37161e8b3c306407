"""Start-up cost of ``persona-eval --help`` next to a bare ``python -c pass``, and what it imports.

    python bench/cli_startup.py [--repeat 15]

Each command runs ``--repeat`` times as a fresh process; wall time (min and median) and the
child's own CPU time (``os.wait4``) are reported, with the load average, since on a shared
machine the wall time mostly measures the queue for a CPU. Bytecode is cached in a
temporary ``PYTHONPYCACHEPREFIX`` (a warm-up run fills it), as in any installed copy; when
this environment sets PYTHONDONTWRITEBYTECODE, the cold figure (every module compiled on
every start) is reported too. Target: ``--help`` under 0.3 s, importing no torch,
transformers, numpy or aiohttp.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "transformers", "numpy", "aiohttp", "datasets", "sentence_transformers", "vllm", "openai")
PROBE = (
    "import sys, io, contextlib\n"
    "from persona_eval.cli import main\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    try:\n"
    "        main(['--help'])\n"
    "    except SystemExit:\n"
    "        pass\n"
    f"print([m for m in {HEAVY!r} if m in sys.modules], len(sys.modules))\n"
)


def measure(command: list[str], env: dict[str, str], repeat: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        walls.append(time.perf_counter() - start)
        cpus.append(usage.ru_utime + usage.ru_stime)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"failed: {' '.join(command)}")
    return {"wall_min": min(walls), "wall_median": statistics.median(walls), "cpu_min": min(cpus),
            "cpu_median": statistics.median(cpus)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    script = os.path.join(os.path.dirname(sys.executable), "persona-eval")
    help_command = [script, "--help"] if os.path.exists(script) else [sys.executable, "-m", "persona_eval.cli", "--help"]
    cold_env = dict(os.environ)
    warm_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    warm_env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="pe-bench-pycache-")
    subprocess.run(help_command, env=warm_env, capture_output=True, check=True)  # fills the bytecode cache

    load_before = os.getloadavg()[0]
    report = {
        "python_pass": measure([sys.executable, "-c", "pass"], warm_env, args.repeat),
        "help": measure(help_command, warm_env, args.repeat),
    }
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        report["help_no_bytecode_cache"] = measure(help_command, cold_env, max(3, args.repeat // 3))
    probe = subprocess.run([sys.executable, "-c", PROBE], env=warm_env, capture_output=True, text=True, check=True)
    heavy, modules = probe.stdout.strip().rsplit(" ", 1)
    report["heavy_modules_imported"] = heavy
    report["modules_loaded"] = int(modules)
    report["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    report["cpus"] = os.cpu_count()

    base, cli = report["python_pass"], report["help"]
    print(f"python -c pass:        wall min {base['wall_min']:.3f} s, median {base['wall_median']:.3f} s; CPU {base['cpu_min']:.3f} s")
    print(f"persona-eval --help:   wall min {cli['wall_min']:.3f} s, median {cli['wall_median']:.3f} s; CPU {cli['cpu_min']:.3f} s "
          f"(target < 0.3 s: {'ok' if cli['wall_min'] < 0.3 else 'MISSED'} by wall min, "
          f"{'ok' if cli['cpu_min'] < 0.3 else 'MISSED'} by CPU)")
    print(f"ratios: --help / pass = {cli['wall_min'] / base['wall_min']:.1f} x wall, {cli['cpu_min'] / base['cpu_min']:.1f} x CPU; "
          f"--help minus interpreter start = {cli['cpu_min'] - base['cpu_min']:.3f} s CPU")
    if "help_no_bytecode_cache" in report:
        cold = report["help_no_bytecode_cache"]
        print(f"without a bytecode cache (PYTHONDONTWRITEBYTECODE is set here): wall min {cold['wall_min']:.3f} s, "
              f"CPU {cold['cpu_min']:.3f} s")
    print(f"heavy modules imported by --help: {heavy} ({modules} modules in all)")
    print(f"load average (1 min): {report['load_average_1m'][0]} before, {report['load_average_1m'][1]} after, on {os.cpu_count()} CPUs")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    if heavy != "[]":
        sys.exit("--help imported a heavy module")


if __name__ == "__main__":
    main()
