"""SIGKILL at random points of a real `persona-eval run`, resumed each time, ends exactly where an uninterrupted run ends.

The run is real end to end: the CLI as a subprocess, the test model and the baseline on
the `openai` backend against a loopback server that answers after 20 ms with a text
derived from a hash of the request, the `gpt-4o` judge on another loopback server whose
verdict is derived the same way (some never parse: those end up unscored, with a reason).
The kill points are seeded: a target count of records on disk (spanning generation and
judging) plus a random delay, so a kill lands in the middle of requests, record writes,
cache writes and config writes alike.

After every kill: each complete line on disk parses and no (item, role) or (item,
criterion, order, judge) key is written twice. At the end: the records (without their
``cached`` flag) and the metrics equal those of the uninterrupted run, with nothing lost,
nothing duplicated, and no stray temporary file.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import reliability_support as rs
from openai_server_support import serve

ITEMS = 30
LATENCY_MS = 20
GENERATIONS = ITEMS * 2
JUDGMENTS = ITEMS * 2 * 2


def _gen_key(record):
    return (record["item_id"], record["role"])


def _judge_key(record):
    return (record["item_id"], record["criterion"], record["order"], record["judge"])


def _content(records, key):
    return {key(r): {k: v for k, v in r.items() if k != "cached"} for r in records}


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return handle.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _complete_records(path: Path) -> tuple[list[dict], bool]:
    """The records of every complete line; whether a torn (unterminated) last line follows them."""
    if not path.exists():
        return [], False
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")
    records = []
    for number, line in enumerate(complete, 1):
        try:
            records.append(json.loads(line))
        except ValueError as exc:  # a corrupt line that is not the tail: never acceptable
            raise AssertionError(f"{path}:{number}: corrupt record after a kill: {exc}: {line[:100]!r}") from None
    return records, bool(tail)


def _check_no_duplicates(records, key, what):
    keys = [key(r) for r in records]
    duplicated = {k for k in keys if keys.count(k) > 1}
    assert not duplicated, f"{what}: written twice: {sorted(duplicated)[:3]}"


@pytest.fixture(scope="module")
def servers():
    with serve(rs.gen_responder(LATENCY_MS)) as generator, serve(rs.judge_responder(LATENCY_MS)) as judge:
        yield generator, judge


def _args(task, out, servers):
    generator, judge = servers
    # Small concurrency: batches of 8 generations and 16 judgments, so there are many
    # batch boundaries to land on.
    return rs.run_args(
        task, out,
        model=f"openai:test-model,base_url={generator.base_url},max_concurrency=2",
        baseline=f"openai:base-model,base_url={generator.base_url},max_concurrency=2",
        judge_model=f"openai:judge,base_url={judge.base_url},max_concurrency=4",
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, servers):
    """The task and the uninterrupted run every resumed run must reproduce."""
    root = tmp_path_factory.mktemp("crash-reference")
    task = rs.write_task(root / "task", ITEMS)
    out = root / "reference"
    completed = rs.cli(*_args(task, out, servers), cache=root / "cache")
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)
    gens = _content(rs.records(out / "generations.jsonl"), _gen_key)
    judgments = _content(rs.records(out / "judgments.jsonl"), _judge_key)
    assert len(gens) == GENERATIONS and len(judgments) == JUDGMENTS
    assert results["metrics"]["judge_health"]["unscored_verdicts"] > 0  # the unscored path is exercised too
    return {"task": task, "results": results, "generations": gens, "judgments": judgments}


def _assert_equals_reference(out: Path, completed, reference) -> None:
    assert completed.returncode == 0, completed.stderr
    resumed = json.loads(completed.stdout)
    gens = rs.records(out / "generations.jsonl")  # every line parses: no corrupt line survived
    judgments = rs.records(out / "judgments.jsonl")
    assert len(gens) == GENERATIONS and len(judgments) == JUDGMENTS  # nothing lost, nothing twice
    assert _content(gens, _gen_key) == reference["generations"]
    assert _content(judgments, _judge_key) == reference["judgments"]
    assert resumed["metrics"] == reference["results"]["metrics"]
    assert resumed["per_judge"] == reference["results"]["per_judge"]
    assert json.loads((out / "results.json").read_text())["metrics"] == reference["results"]["metrics"]
    strays = [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert strays == [], f"temporary files left behind: {strays}"


@pytest.mark.parametrize("kills", [pytest.param(5, id="5-kills"), pytest.param(20, id="20-kills", marks=pytest.mark.slow)])
def test_sigkill_and_resume_equals_an_uninterrupted_run(tmp_path, servers, reference, kills):
    out = tmp_path / "killed"
    rng = random.Random(20250110 + kills)
    total = GENERATIONS + JUDGMENTS
    # Targets: records on disk before the kill (0 = during start-up), one drawn from each of
    # `kills` equal strata of the run, so both stages get their share.
    span = (total - 12) / kills
    targets = [int(i * span + rng.uniform(0, span)) for i in range(kills)]
    env = rs.cli_env(tmp_path / "cache")
    command = rs.cli_command(*_args(reference["task"], out, servers))
    killed, torn_tails, phases = 0, 0, []
    for target in targets:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if _count_lines(out / "generations.jsonl") + _count_lines(out / "judgments.jsonl") >= target:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.04))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
        if process.returncode == -signal.SIGKILL:
            killed += 1
        else:
            assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
        gens, gen_torn = _complete_records(out / "generations.jsonl")
        judgments, judge_torn = _complete_records(out / "judgments.jsonl")
        torn_tails += gen_torn + judge_torn
        phases.append("generation" if len(gens) < GENERATIONS else "judging")
        _check_no_duplicates(gens, _gen_key, "generations")
        _check_no_duplicates(judgments, _judge_key, "judgments")
        results = out / "results.json"
        assert not results.exists() or json.loads(results.read_text())["metrics"] == reference["results"]["metrics"]

    # Every kill must have hit a live process, in both stages.
    assert killed >= kills - 1, f"only {killed} of {kills} kills hit a running process"
    assert "generation" in phases and "judging" in phases, phases
    _assert_equals_reference(out, rs.cli(*_args(reference["task"], out, servers), cache=tmp_path / "cache"), reference)
    print(f"{killed} kills ({phases.count('generation')} in generation), {torn_tails} torn tails left by a kill")


@pytest.mark.parametrize("point", list(rs.CRASH_POINTS))
def test_kill_at_a_named_crash_point_then_resume(tmp_path, servers, reference, point):
    """A process that SIGKILLs itself at an exact, chosen point; the rerun repairs and completes."""
    out = tmp_path / "killed"
    env = rs.cli_env(tmp_path / "cache")
    crashed = subprocess.run(rs.crash_command(point, *_args(reference["task"], out, servers)), env=env,
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, f"{rs.CRASH_POINTS[point]}: did not die there: {crashed.stderr[-1500:]}"
    if point.startswith("torn-"):
        name = "generations.jsonl" if point == "torn-generation-line" else "judgments.jsonl"
        _, torn = _complete_records(out / name)
        assert torn, "the kill should have left a torn last line"
    if point.startswith("before-"):
        assert list(out.glob(".*.tmp")), "the kill should have left the atomic writer's temporary file"
        assert not (out / "results.json").exists()
    _assert_equals_reference(out, rs.cli(*_args(reference["task"], out, servers), cache=tmp_path / "cache"), reference)


def test_batched_cache_keys_equal_the_documented_key():
    """`cached_map` serializes the identity once per batch; the keys must stay exactly `cache_key`'s,
    or a resumed run (or one after an upgrade) would miss everything cached before."""
    from persona_eval.storage.cache import cache_key, cache_keys

    identities = [{"backend": "openai", "model": "m", "nested": [1, 2.5, {"é": None}]}, {}, "plain", None]
    payloads = [{"prompt": 'quote " backslash \\ emoji 😀', "params": {"stop": ["\n"], "temperature": 0.7}},
                [1, "two", 3.0], "text", None, {"z": 1, "a": {"b": [True, False]}}]
    for identity in identities:
        for stage in ("generate", "judge", 'odd "stage"'):
            assert cache_keys(stage, identity, payloads) == [cache_key(stage, identity, p) for p in payloads]
    # Pinned: the key format is part of every existing cache.
    assert cache_key("judge", {"judge": "x"}, {"a": 1}) == \
        "64b874ab95b575e076f8e70e432852d9f438b6785e35a778b530757e7d34f41b"
