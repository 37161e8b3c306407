"""`--executor ray` on a real local Ray cluster: same results as a local run, and the fault behaviour.

One cluster for the module: ``ray start --head --block`` on loopback with 2 CPUs (token auth
off, memory monitor off), stopped at the end by signalling that process, which stops every Ray
process it started. Every run is the CLI as a subprocess (its own Ray driver) on a small copy of
the demo task (``--limit 2``, 8 new tokens) with the embedded model:

* a worker actor killed with SIGKILL while it computes a batch: Ray restarts it, the batch is
  retried, the run ends with every record once;
* and that very run's records are byte for byte a local run's, its results equal apart from timing
  (one ray run serves both: the retried batch must leave no trace);
* the driver killed with SIGKILL mid-stage: the same command again, on the same cluster, resumes
  from the run directory and the cache, nothing lost, nothing twice;
* an unreachable cluster: a one-line error naming the address, exit 2, nothing written;
* a re-judging with an API judge needs no cluster at all (the address may even be dead) and
  gives the local executor's verdicts;
* `infer --executor ray` writes the very personas `infer` writes locally.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import reliability_support as rs
from cli_support import invoke
from conftest import REPO, SHARED_MODELS

pytest.importorskip("ray")  # the [ray] extra, part of [dev]: CI has it

pytestmark = pytest.mark.slow

WORKER_TITLE = "ray::MapWorker(MapBatches(RayWorker))"
# What may differ between two runs of the same command: when and where, and how it was executed.
TIMING_KEYS = {"seconds", "created", "run_dir", "executor"}


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_memory_monitor_refresh_ms": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray head on loopback, as docs/scale.md starts one; its address."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **RAY_ENV}, start_new_session=True,
    )
    started, seen = time.monotonic(), []
    for line in head.stdout:
        seen.append(line)
        if "Ray runtime started" in line:
            break
        if time.monotonic() - started > 120:
            break
    if head.poll() is not None or not any("Ray runtime started" in line for line in seen):
        head.kill()
        pytest.fail("ray start --head did not come up:\n" + "".join(seen[-20:]))
    # Keep reading its output, so a full pipe never blocks the head.
    import threading

    threading.Thread(target=lambda: [None for _ in head.stdout], daemon=True).start()
    yield f"127.0.0.1:{port}"
    head.send_signal(signal.SIGTERM)  # `ray start --block` stops every process of the node it started
    try:
        head.wait(10)
    except subprocess.TimeoutExpired:
        # Its session (raylet, GCS; the workers end with the raylet), started for this module alone.
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    """The demo task with 8 new tokens per answer (its data read in place)."""
    import yaml

    demo = REPO / "tasks" / "demo" / "demo.yaml"
    spec = yaml.safe_load(demo.read_text(encoding="utf-8"))
    spec["name"] = "demo-ray"
    spec["generation"]["max_new_tokens"] = 8
    spec["dataset"] = {key: str(demo.parent / value) for key, value in spec["dataset"].items()}
    path = tmp_path_factory.mktemp("ray-task") / "demo-ray.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _cache(folder: Path) -> Path:
    """A fresh result cache whose models/ is the shared copy of the embedded model."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").symlink_to(SHARED_MODELS, target_is_directory=True)
    return folder


def _args(task: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--task", str(task), "--limit", "2", "--output-dir", str(out), "--bootstrap", "200", "--quiet", "--json",
            *extra]


def _env(cache: Path) -> dict[str, str]:
    return rs.cli_env(cache, **RAY_ENV)


@pytest.fixture(scope="module")
def local_run(task_file, tmp_path_factory, embedded_model_dir):
    """The reference: the same task with the local executor."""
    root = tmp_path_factory.mktemp("ray-local")
    out = root / "run"
    completed = rs.cli(*_args(task_file, out), cache=_cache(root / "cache"), env=_env(root / "cache"), timeout=600)
    assert completed.returncode == 0, completed.stderr
    return out


def _worker_pids(busy: bool) -> list[int]:
    """Ray Data actor processes of our worker class; `busy`: only those computing a batch right now."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith(WORKER_TITLE) and (not busy or title.endswith(".submit")):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def ray_run(task_file, tmp_path_factory, cluster, local_run):
    """The same command with --executor ray on the cluster, one worker killed with SIGKILL mid-batch."""
    root = tmp_path_factory.mktemp("ray-run")
    out = root / "run"
    process = subprocess.Popen(rs.cli_command(*_args(task_file, out, "--executor", f"ray,address={cluster}")),
                               env=_env(_cache(root / "cache")), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        busy = _worker_pids(busy=True)
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=600)
    return {"out": out, "killed": killed, "returncode": process.returncode, "stdout": stdout, "stderr": stderr}


def _keyed(path: Path, key) -> dict:
    records = rs.records(path)
    keys = [key(r) for r in records]
    assert len(keys) == len(set(keys)), f"{path.name}: a record written twice"
    return {key(r): {k: v for k, v in r.items() if k != "cached"} for r in records}


def _gen_key(r):
    return (r["item_id"], r["role"])


def _judge_key(r):
    return (r["item_id"], r["criterion"], r["order"], r["judge"])


def _assert_same_content(out: Path, reference: Path) -> None:
    assert _keyed(out / "generations.jsonl", _gen_key) == _keyed(reference / "generations.jsonl", _gen_key)
    assert _keyed(out / "judgments.jsonl", _judge_key) == _keyed(reference / "judgments.jsonl", _judge_key)
    assert len(_keyed(out / "generations.jsonl", _gen_key)) == 4 and len(_keyed(out / "judgments.jsonl", _judge_key)) == 8
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == json.loads((reference / "results.json").read_text())["metrics"]


def test_a_worker_killed_mid_batch_is_retried(ray_run):
    assert ray_run["killed"] is not None, "no worker was ever seen computing a batch"
    assert ray_run["returncode"] == 0, ray_run["stderr"]
    assert json.loads(ray_run["stdout"])["metrics"]  # stdout is the results alone (Ray's notices go to the log)
    # Ray restarted the actor and retried its batch: every record once, none from a cache.
    assert len(_keyed(ray_run["out"] / "generations.jsonl", _gen_key)) == 4
    assert len(_keyed(ray_run["out"] / "judgments.jsonl", _judge_key)) == 8
    assert not any(r["cached"] for r in rs.records(ray_run["out"] / "generations.jsonl"))


def test_a_ray_run_equals_a_local_run(ray_run, local_run):
    assert ray_run["returncode"] == 0, ray_run["stderr"]
    ray_run = ray_run["out"]
    for name in ("generations.jsonl", "judgments.jsonl"):
        assert (ray_run / name).read_bytes() == (local_run / name).read_bytes(), name
    ours, theirs = (json.loads((folder / "results.json").read_text()) for folder in (ray_run, local_run))
    assert _without_timing(ours) == _without_timing(theirs)
    config = json.loads((ray_run / "config.json").read_text())
    assert config["executor"]["name"] == "ray" and "executor" not in json.loads((local_run / "config.json").read_text())
    assert config["run_key"] == json.loads((local_run / "config.json").read_text())["run_key"]


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_a_killed_driver_resumes_on_the_same_cluster(task_file, tmp_path, cluster, ray_run):
    out, cache = tmp_path / "run", _cache(tmp_path / "cache")
    command = rs.cli_command(*_args(task_file, out, "--executor", f"ray,address={cluster}"))
    process = subprocess.Popen(command, env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    # The test model's two answers are on disk: the baseline's batch is on the cluster now.
    while _lines(out / "generations.jsonl") < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill: nothing was interrupted"
    before = (out / "generations.jsonl").read_bytes()
    assert 2 <= before.count(b"\n") < 4 and _lines(out / "judgments.jsonl") == 0

    again = subprocess.run(command, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    _assert_same_content(out, ray_run["out"])
    # What the killed run wrote stays as it was (resumed from the file, never written twice).
    assert (out / "generations.jsonl").read_bytes().startswith(before)


def test_persona_inference_on_the_cluster_equals_a_local_one(cluster, tmp_path):
    """`infer --executor ray`: the same personas, records and run key as `infer` in this process."""
    pairs = tmp_path / "pairs.jsonl"
    demo = rs.records(REPO / "tasks" / "demo" / "data" / "test.jsonl")[:2]
    pairs.write_text("".join(json.dumps({k: e[k] for k in ("id", "prompt", "chosen", "rejected")}) + "\n" for e in demo))
    outputs = {}
    for executor in ("local", f"ray,address={cluster}"):
        name = executor.split(",")[0]
        output = tmp_path / name / "personas.jsonl"
        completed = rs.cli("infer", str(pairs), "-o", str(output), "--max-new-tokens", "8", "--max-attempts", "1", "--quiet",
                           "--executor", executor, cache=_cache(tmp_path / f"cache-{name}"), env=_env(tmp_path / f"cache-{name}"),
                           timeout=600)
        assert completed.returncode == 0, completed.stderr
        outputs[name] = output
    counted = 0
    for name in ("personas.jsonl", "personas.dropped.jsonl"):  # kept pairs; pairs with a persona that failed the screens
        ray, local = (outputs[key].with_name(name) for key in ("ray", "local"))
        assert ray.exists() == local.exists()
        if ray.exists():
            assert ray.read_bytes() == local.read_bytes(), name
            counted += len(rs.records(ray))
    assert counted == 2


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_cluster_is_one_line_and_nothing_written(task_file, tmp_path, address):
    out = tmp_path / "run"
    completed = invoke(*_args(task_file, out, "--executor", f"ray,address={address}"))
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and lines[0].startswith("Error: --executor ray: cannot reach"), lines
    assert not out.exists()


def test_an_unreachable_cluster_stops_judge_and_infer_before_writing(local_run, tmp_path):
    before = sorted(p.name for p in local_run.iterdir())
    completed = invoke("judge", str(local_run), "--quiet", "--executor", "ray,address=127.0.0.1:1")
    assert completed.returncode == 2 and "127.0.0.1:1" in completed.stderr, completed.stderr
    assert sorted(p.name for p in local_run.iterdir()) == before  # no judge-* folder

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "1", "prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}) + "\n")
    output = tmp_path / "out" / "personas.jsonl"
    completed = invoke("infer", str(pairs), "-o", str(output), "--quiet", "--executor", "ray,address=127.0.0.1:1")
    assert completed.returncode == 2 and "127.0.0.1:1" in completed.stderr, completed.stderr
    assert not output.parent.exists()


def test_an_api_judge_needs_no_cluster(local_run, tmp_path):
    """Re-judging with an API judge: nothing goes to a cluster, so even a dead address gives the local verdicts."""
    from openai_server_support import serve

    with serve(rs.judge_responder()) as server:
        judge = f"gpt-4o@openai:judge,base_url={server.base_url}"
        outputs = {}
        for executor in ("local", "ray,address=127.0.0.1:1"):
            out = tmp_path / executor.split(",")[0]
            completed = rs.cli("judge", str(local_run), "--judge", judge, "--output-dir", str(out), "--no-cache", "--quiet",
                               "--json", "--bootstrap", "200", "--executor", executor, cache=_cache(tmp_path / f"cache-{out.name}"),
                               env=_env(tmp_path / f"cache-{out.name}"), timeout=300)
            assert completed.returncode == 0, completed.stderr
            outputs[executor] = out
    local, ray = outputs.values()
    assert (ray / "judgments.jsonl").read_bytes() == (local / "judgments.jsonl").read_bytes()
    assert len(rs.records(ray / "judgments.jsonl")) == 8
