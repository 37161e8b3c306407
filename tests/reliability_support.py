"""Fixtures shared by the reliability tests and the `bench/` scripts: synthetic tasks and loopback responders.

- `write_task(folder, n)`: a task YAML and ``test.jsonl`` with ``n`` items (gold personas);
- `write_outputs(path, n, role)`: precomputed responses for the `file` backend;
- `judge_text(prompt)` / `gen_text(prompt)`: deterministic answers that depend only on a hash of
  the request, so a resumed or faulty run must reproduce an uninterrupted one exactly; about
  one judge answer in twelve carries no verdict (the judge re-asks) and one pair in twenty
  never gets one (recorded unscored, with the reason);
- `judge_responder(latency_ms)` / `gen_responder(latency_ms)`: async responders for
  `openai_server_support.serve`;
- `ServerProcess`: that server in a child process (its own GIL), for benchmarks;
- `cli(...)`: ``persona-eval`` as a subprocess, with an isolated cache and plugin environment;
- `measure_child(command, env)`: one child's wall and CPU time and peak RSS, for benchmarks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

TASK_YAML = """\
name: {name}
version: 1
description: Synthetic items for the reliability tests and benchmarks.
dataset:
  test: test.jsonl
splits: [chosen, rejected]
persona_source: gold
strategies:
  test: pt
  baseline: baseline
generation:
  max_new_tokens: 64
judge:
  name: gpt-4o
  max_attempts: 2
  generation:
    max_new_tokens: 64
"""

TOPICS = ("bread", "budgets", "running", "houseplants", "chess", "tax forms", "bicycles", "sleep", "knots", "tea")
TRAITS = ("a busy parent", "a retired engineer", "a first-year student", "a nurse on night shifts", "a hobby chef")
PREFERS = ("short, direct steps", "detailed background", "humour", "checklists", "sources and numbers")


def item(index: int) -> dict[str, Any]:
    topic = TOPICS[index % len(TOPICS)]
    return {
        "id": f"item-{index:05d}",
        "prompt": f"Question {index}: how should I get started with {topic}?",
        "chosen": f"A careful answer about {topic}.",
        "rejected": f"A hasty answer about {topic}.",
        "chosen_persona": f"The user is {TRAITS[index % len(TRAITS)]} and prefers {PREFERS[index % len(PREFERS)]}.",
        "rejected_persona": f"The user is {TRAITS[(index + 2) % len(TRAITS)]} and prefers {PREFERS[(index + 3) % len(PREFERS)]}.",
    }


def write_task(folder: Path, n: int, *, name: str = "reliability") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "test.jsonl", "w", encoding="utf-8") as handle:
        for index in range(n):
            handle.write(json.dumps(item(index)) + "\n")
    path = folder / "task.yaml"
    path.write_text(TASK_YAML.format(name=name), encoding="utf-8")
    return path


def write_outputs(path: Path, n: int, role: str, *, words: int = 40) -> Path:
    """{id: response}; the test model's answers mention the persona, the baseline's do not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for index in range(n):
        seed = _digest(f"{role}:{index}")
        length = words + seed % words
        filler = " ".join(f"w{(seed >> (i % 40)) % 97}" for i in range(length))
        outputs[item(index)["id"]] = f"[{role}] answer {index}: {filler}."
    path.write_text(json.dumps(outputs), encoding="utf-8")
    return path


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def judge_text(prompt: str) -> str:
    value = _digest(prompt)
    # The judge's re-ask appends a reminder; a pair whose original prompt hashes to 0 mod 20
    # never gets a verdict (recorded unscored), others miss one now and then (re-asked).
    if _digest(prompt.split("\n\nReminder:")[0]) % 20 == 0 or value % 12 == 0:
        return "Both responses have merits and I cannot decide."
    return f"Rationale {value % 1000}: one response fits the criterion better.\nVerdict: {'AB'[value % 2]}"


def gen_text(prompt: str) -> str:
    value = _digest(prompt)
    return f"Generated answer {value % 100000} " + " ".join(f"t{(value >> i) % 53}" for i in range(12 + value % 20))


def _user_text(chat) -> str:
    return "\n".join(m["content"] for m in chat.messages if m["role"] != "system")


def _responder(answer, latency_ms: float):
    """A loopback responder: `answer` of the request's non-system text, after `latency_ms`."""
    from openai_server_support import FunctionResponder

    async def respond(chat):
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000.0)
        return answer(_user_text(chat))

    return FunctionResponder(respond)


def judge_responder(latency_ms: float = 0.0):
    return _responder(judge_text, latency_ms)


def gen_responder(latency_ms: float = 0.0):
    return _responder(gen_text, latency_ms)


# ---- the server in its own process (benchmarks) ---------------------------------------


def ServerProcess(kind: str = "judge", latency_ms: float = 0.0):
    """The judge or generation responder served from a child process (its own GIL)."""
    from openai_server_support import ChildServer

    return ChildServer(judge_responder if kind == "judge" else gen_responder, latency_ms)


# ---- the CLI as a subprocess --------------------------------------------------------------

PLUGIN_ENV = ("PERSONA_EVAL_LOAD_PLUGINS", "PERSONA_EVAL_STRICT_PLUGINS")


def cli_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    env.update({"PERSONA_EVAL_CACHE": str(cache), "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **extra})
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "persona_eval.cli", *args]


def cli(*args: str, cache: Path, timeout: float = 120, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env(cache), cwd=cwd)


@dataclass
class ChildUsage:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str


def measure_child(command: list[str], env: dict[str, str], *, keep_stdout: bool = True) -> ChildUsage:
    """Run one child process to its end: wall time, and CPU time and peak RSS of the child alone.

    `os.wait4` gives the child's own resource usage (not the sum over all children); stderr
    goes to a file, so a chatty child cannot block on a full pipe. Exits on failure.
    """
    with tempfile.TemporaryFile() as stderr_file:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
                                   stderr=stderr_file)
        stdout = process.stdout.read() if keep_stdout else b""
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            stderr_file.seek(0)
            sys.exit(f"failed: {' '.join(command[:6])} ...\n{stderr_file.read().decode(errors='replace')[-3000:]}")
    return ChildUsage(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, stdout.decode())


def run_args(task: Path, out: Path, *, model: str, baseline: str, judge_model: str, judge: str = "gpt-4o",
             limit: int = 0, extra: tuple[str, ...] = ()) -> list[str]:
    return ["run", "--task", str(task), "--split", "rejected", "--model", model, "--baseline", baseline,
            "--judge", judge, "--judge-model", judge_model, "--limit", str(limit), "--output-dir", str(out),
            "--bootstrap", "200", "--quiet", "--json", *extra]


def records(path: Path) -> list[dict[str, Any]]:
    """Every line must parse: a torn or corrupt line fails the caller's test here."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line == "":
            continue
        try:
            out.append(json.loads(line))
        except ValueError as exc:
            raise AssertionError(f"{path}:{number}: corrupt JSON Lines record: {exc}: {line[:120]!r}") from None
    return out


# ---- deterministic crash points, installed in a subprocess ---------------------------------

CRASH_POINTS = {
    "before-config-rename": "killed inside the first atomic write of config.json, before its rename",
    "torn-generation-line": "killed halfway through writing the 5th generation record",
    "after-judge-cache-commit": "killed after a judge batch is committed to the cache, before its records are written",
    "torn-judgment-line": "killed halfway through writing the 21st judgment record",
    "before-results-rename": "killed inside the atomic write of results.json, after its fsync, before its rename",
}


def install_crash_point(point: str) -> None:
    """Make this process SIGKILL itself at `point` (run through `crash_command`)."""
    import signal

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if point in ("before-config-rename", "before-results-rename"):
        target = "config.json" if point == "before-config-rename" else "results.json"
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if str(dst).endswith(target):
                die()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    elif point in ("torn-generation-line", "torn-judgment-line"):
        from persona_eval.storage import jsonl

        name, nth = ("generations.jsonl", 5) if point == "torn-generation-line" else ("judgments.jsonl", 21)
        real_write = jsonl.JsonlWriter.write
        count = [0]

        def write(self, record):
            if self.path.name == name:
                count[0] += 1
                if count[0] == nth:
                    line = json.dumps(record, ensure_ascii=False) + "\n"
                    self._handle.write(line[: len(line) // 2])
                    self._handle.flush()
                    die()
            return real_write(self, record)

        jsonl.JsonlWriter.write = write
    elif point == "after-judge-cache-commit":
        from persona_eval.storage import cache

        real_put = cache.ResultCache.put_many

        def put_many(self, stage, items):
            real_put(self, stage, items)
            if stage == "judge":
                die()

        cache.ResultCache.put_many = put_many
    else:
        raise ValueError(f"unknown crash point {point!r}; known: {', '.join(CRASH_POINTS)}")


def crash_command(point: str, *args: str) -> list[str]:
    """``persona-eval ARGS`` in a process that kills itself at `point`."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        f"import reliability_support; reliability_support.install_crash_point({point!r}); "
        "from persona_eval.cli import main; main()"
    )
    return [sys.executable, "-c", code, *args]
