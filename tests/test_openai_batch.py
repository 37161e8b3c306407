"""The `openai` generator's Batch API path (``batch=true``) against the loopback server's files and batches endpoints.

The server is the production `persona_eval.serving.openai_server` with a scripted batch
lifecycle (`openai_server_support.ScriptedBatches`): held in progress, expired in part, failed
in part, rejected at validation. The server counts every custom id submitted, so a test can
prove that nothing was sent (and paid for) twice. The end-to-end tests run ``persona-eval run``
as a subprocess: a batch run gives what the synchronous run gives, and one SIGKILLed while its
batches are in progress re-attaches to them on rerun.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest
import reliability_support as rs
from openai_server_support import ScriptedBatches, serve

from persona_eval.contracts.records import GenParams, GenRequest
from persona_eval.errors import RunError, UsageError
from persona_eval.plugins.generators.openai import OpenAIGenerator
from persona_eval.plugins.generators.openai_batch import RECORDS_FILE, custom_id

FAST = {"batch_poll_s": 0.01, "batch_poll_max_s": 0.05, "backoff": 0.01}


async def echo(chat):
    return f"echo:{chat.messages[-1]['content']}"


def requests_for(n: int, prefix: str = "question") -> list[GenRequest]:
    return [GenRequest(id=f"item-{i}", prompt=f"{prefix} {i}", params=GenParams(max_new_tokens=5)) for i in range(n)]


def make(server, run_dir=None, **options) -> OpenAIGenerator:
    generator = OpenAIGenerator("m", base_url=server.base_url, batch=True, **{**FAST, **options})
    if run_dir is not None:
        generator.bind_run_dir(run_dir)
    return generator


def records(run_dir) -> list[dict]:
    path = run_dir / RECORDS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ids_of(generator, requests) -> list[str]:
    return [custom_id(generator.body(r)) for r in requests]


def test_batch_gives_what_sync_gives_and_records_its_batches(tmp_path):
    requests = requests_for(7)
    with serve(echo, batch_policy=ScriptedBatches(start_after_polls=1, finish_after_polls=2)) as server:
        sync = OpenAIGenerator("m", base_url=server.base_url, backoff=0.01)
        batch = make(server, tmp_path, batch_max_requests=3)
        try:
            expected = sync.generate(requests)
            got = batch.generate(requests)
        finally:
            sync.close()
            batch.close()
        snapshot = server.stats.snapshot()
    assert [(r.text, r.input_tokens, r.output_tokens, r.usage_source) for r in got] == \
        [(r.text, r.input_tokens, r.output_tokens, r.usage_source) for r in expected]
    assert got[0].text == "echo:question 0" and got[0].usage_source == "api"
    # Same requests, same answers, same cache entries: the batch options stay out of the identity.
    assert batch.identity() == sync.identity()
    assert snapshot["completions"] == 7  # the synchronous generator's only
    assert snapshot["batches"] == 3 and sorted(snapshot["batch_submissions"].values()) == [1] * 7
    assert batch.preferred_batch_size == 3
    recorded = records(tmp_path)
    assert [len(r["custom_ids"]) for r in recorded] == [3, 3, 1]
    assert [c for r in recorded for c in r["custom_ids"]] == ids_of(batch, requests)
    assert all(r["base_url"] == server.base_url and r["model"] == "m" for r in recorded)
    stats = batch.stats()
    assert stats["batches"] == 3 and stats["batch_requests"] == 7 and stats["requests"] == 0
    assert stats["items"] == 7 and stats["input_tokens"] == sum(r.input_tokens for r in got)


def test_identical_bodies_are_sent_once_and_custom_ids_are_stable(tmp_path):
    requests = requests_for(3) + requests_for(3)
    with serve(echo) as server:
        generator = make(server, tmp_path)
        try:
            texts = [r.text for r in generator.generate(requests)]
        finally:
            generator.close()
        assert sum(server.stats.batch_submissions.values()) == 3
    assert texts == [f"echo:question {i}" for i in (0, 1, 2, 0, 1, 2)]
    again = OpenAIGenerator("m", base_url="http://127.0.0.1:1/v1", batch=True)
    assert ids_of(again, requests[:3]) == records(tmp_path)[0]["custom_ids"]  # a rerun maps to the same ids


def test_batches_split_by_bytes_and_an_oversized_item_is_a_usage_error(tmp_path):
    requests = requests_for(6)
    line = len(json.dumps({"custom_id": "pe-" + "0" * 32, "method": "POST", "url": "/v1/chat/completions",
                           "body": make_offline().body(requests[0])}, separators=(",", ":"))) + 1
    with serve(echo) as server:
        generator = make(server, tmp_path, batch_max_bytes=2 * line + 1)
        try:
            assert len(generator.generate(requests)) == 6
        finally:
            generator.close()
    assert [len(r["custom_ids"]) for r in records(tmp_path)] == [2, 2, 2]
    with serve(echo) as server:
        generator = make(server, tmp_path, batch_max_bytes=10)
        try:
            with pytest.raises(UsageError, match=r"item 'item-0' alone is \d+ bytes, over the batch file limit of 10"):
                generator.generate(requests[:1])
        finally:
            generator.close()


def make_offline(**options) -> OpenAIGenerator:
    return OpenAIGenerator("m", base_url="http://127.0.0.1:1/v1", batch=True, **options)


def test_a_second_run_re_attaches_to_a_batch_in_progress_and_to_a_finished_one(tmp_path):
    requests = requests_for(5)
    policy = ScriptedBatches(held=True)
    with serve(echo, batch_policy=policy) as server:
        first = make(server, tmp_path)
        results: dict[str, list] = {}
        worker = threading.Thread(target=lambda: results.setdefault("first", first.generate(requests)))
        worker.start()
        deadline = time.monotonic() + 10
        while not records(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert records(tmp_path), "the batch id was not recorded while the batch was in progress"
        # A second process (here: a second generator) reading the same run folder re-attaches.
        second = make(server, tmp_path)
        worker2 = threading.Thread(target=lambda: results.setdefault("second", second.generate(requests)))
        worker2.start()
        time.sleep(0.2)
        assert server.stats.batches == 1
        policy.release()
        worker.join(10)
        worker2.join(10)
        third = make(server, tmp_path)  # the batch is completed now: downloaded, not sent again
        try:
            results["third"] = third.generate(requests)
        finally:
            for generator in (first, second, third):
                generator.close()
        snapshot = server.stats.snapshot()
    texts = [f"echo:question {i}" for i in range(5)]
    assert [[r.text for r in results[k]] for k in ("first", "second", "third")] == [texts] * 3
    assert snapshot["batches"] == 1 and sorted(snapshot["batch_submissions"].values()) == [1] * 5
    assert second.stats()["batches_reattached"] == 1 and second.stats()["batches"] == 0
    assert third.stats()["batches_reattached"] == 1 and third.stats()["batches"] == 0


def test_expired_and_failed_requests_alone_are_sent_again(tmp_path):
    requests = requests_for(12)
    ids = ids_of(make_offline(), requests)
    expired, failed = set(ids[:3]), set(ids[3:5])
    policy = ScriptedBatches(
        expire=lambda job, custom: job.number == 0 and custom in expired,
        fail=lambda job, custom: 503 if job.number == 0 and custom in failed else None,
    )
    with serve(echo, batch_policy=policy) as server:
        generator = make(server, tmp_path)
        try:
            texts = [r.text for r in generator.generate(requests)]
        finally:
            generator.close()
        snapshot = server.stats.snapshot()
    assert texts == [f"echo:question {i}" for i in range(12)]
    assert snapshot["batches"] == 2 and snapshot["completions"] == 0
    assert {c for c, n in snapshot["batch_submissions"].items() if n == 2} == expired | failed
    assert sorted(snapshot["batch_submissions"].values()) == [1] * 7 + [2] * 5
    assert [len(r["custom_ids"]) for r in records(tmp_path)] == [12, 5]
    assert generator.stats()["batch_resubmitted"] == 5


def test_fallback_sync_sends_the_missing_through_chat_completions(tmp_path):
    requests = requests_for(8)
    ids = ids_of(make_offline(), requests)
    policy = ScriptedBatches(expire=lambda job, custom: custom in ids[:3])
    with serve(echo, batch_policy=policy) as server:
        generator = make(server, tmp_path, batch_fallback="sync")
        try:
            texts = [r.text for r in generator.generate(requests)]
        finally:
            generator.close()
        snapshot = server.stats.snapshot()
    assert texts == [f"echo:question {i}" for i in range(8)]
    assert snapshot["batches"] == 1 and snapshot["completions"] == 3
    assert sorted(b["messages"][-1]["content"] for b in server.stats.bodies) == [f"question {i}" for i in range(3)]
    assert generator.stats()["batch_fallback_sync"] == 3


def test_a_request_that_cannot_succeed_is_the_synchronous_error(tmp_path):
    requests = requests_for(3)
    ids = ids_of(make_offline(), requests)
    policy = ScriptedBatches(fail=lambda job, custom: 400 if custom == ids[1] else None)
    with serve(echo, batch_policy=policy) as server:
        generator = make(server, tmp_path)
        try:
            with pytest.raises(RunError, match=r"rejected item 'item-1' \(HTTP 400\)"):
                generator.generate(requests)
        finally:
            generator.close()
        assert server.stats.batches == 1


def test_a_batch_rejected_every_time_ends_in_one_line_naming_an_item(tmp_path):
    policy = ScriptedBatches(reject=lambda job: "the model is not available for batch")
    with serve(echo, batch_policy=policy) as server:
        generator = make(server, tmp_path, max_retries=1)
        try:
            with pytest.raises(RunError) as caught:
                generator.generate(requests_for(2))
        finally:
            generator.close()
        assert server.stats.batches == 2  # the first submission and one more
    message = str(caught.value)
    assert "item 'item-0' got no answer from 2 batch submission(s)" in message
    assert "batch failed: the model is not available for batch" in message and "\n" not in message


def test_a_server_without_the_batch_api_is_a_usage_error(tmp_path):
    with serve(echo) as server:
        generator = OpenAIGenerator("m", base_url=f"{server.url}/elsewhere/v1", batch=True, **FAST)
        try:
            with pytest.raises(UsageError, match=r"has no Batch API .*use batch=false"):
                generator.generate(requests_for(1))
        finally:
            generator.close()


def test_an_unknown_recorded_batch_and_a_torn_record_are_survived(tmp_path):
    with serve(echo) as server:
        requests = requests_for(2)
        ids = ids_of(make_offline(), requests)
        stale = {"batch_id": "batch_gone", "base_url": server.base_url, "model": "m", "custom_ids": ids}
        other = {"batch_id": "batch_other", "base_url": "http://127.0.0.1:9/v1", "model": "m", "custom_ids": ids}
        (tmp_path / RECORDS_FILE).write_text(json.dumps(other) + "\n" + json.dumps(stale) + "\n" + '{"batch_id": "bat')
        generator = make(server, tmp_path)
        try:
            assert [r.text for r in generator.generate(requests)] == ["echo:question 0", "echo:question 1"]
        finally:
            generator.close()
        assert server.stats.batches == 1
    assert [r["batch_id"] for r in records(tmp_path)][:2] == ["batch_other", "batch_gone"]  # torn tail cut off
    assert generator.stats()["batches_reattached"] == 1 and generator.stats()["batch_resubmitted"] == 2


def test_bad_batch_options():
    for options, message in (({"batch_fallback": "maybe"}, "batch_fallback"), ({"batch_poll_s": 0}, "batch_poll_s"),
                             ({"batch_max_requests": 50_001}, "batch_max_requests"), ({"batch": "yes"}, "batch=")):
        with pytest.raises(UsageError, match=message):
            OpenAIGenerator("m", **{"batch": True, **options})


# ---- end to end: persona-eval run ------------------------------------------------------------

ITEMS = 6
BATCH = "batch=true,batch_poll_s=0.02,batch_poll_max_s=0.1,backoff=0.01"


def _args(task, out, gen_url, judge_url, batch: bool):
    extra = f",{BATCH}" if batch else ",backoff=0.01"
    return rs.run_args(task, out, model=f"openai:test-model,base_url={gen_url}{extra}",
                       baseline=f"openai:base-model,base_url={gen_url}{extra}",
                       judge_model=f"openai:judge,base_url={judge_url}{extra}")


def _verdicts(out) -> dict:
    return {(r["item_id"], r["criterion"], r["order"]): (r["winner"], r["raw"], r["unscored_reason"])
            for r in rs.records(out / "judgments.jsonl")}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return rs.write_task(tmp_path_factory.mktemp("batch-task"), ITEMS)


@pytest.fixture(scope="module")
def synchronous(task, tmp_path_factory):
    root = tmp_path_factory.mktemp("sync")
    with serve(rs.gen_responder()) as gen, serve(rs.judge_responder()) as judge:
        completed = rs.cli(*_args(task, root / "out", gen.base_url, judge.base_url, False), cache=root / "cache")
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout), _verdicts(root / "out"), root / "cache"


def test_a_batch_run_scores_exactly_as_the_synchronous_run(task, synchronous, tmp_path):
    sync_results, sync_verdicts, _ = synchronous
    with serve(rs.gen_responder()) as gen, serve(rs.judge_responder()) as judge:
        completed = rs.cli(*_args(task, tmp_path / "out", gen.base_url, judge.base_url, True), cache=tmp_path / "cache")
        served = [gen.stats.snapshot(), judge.stats.snapshot()]
        # One cache for both paths: the synchronous run over the batch run's cache sends nothing.
        cached = rs.cli(*_args(task, tmp_path / "again", gen.base_url, judge.base_url, False), cache=tmp_path / "cache")
        assert gen.stats.requests + judge.stats.requests == served[0]["requests"] + served[1]["requests"]
    assert completed.returncode == 0, completed.stderr
    assert cached.returncode == 0, cached.stderr
    results = json.loads(completed.stdout)
    assert results["metrics"] == sync_results["metrics"] == json.loads(cached.stdout)["metrics"]
    assert _verdicts(tmp_path / "out") == sync_verdicts
    assert all(s["completions"] == 0 and s["batches"] >= 1 for s in served), served
    assert all(set(s["batch_submissions"].values()) == {1} for s in served)
    api = results["api"]
    assert sum(stats["batches"] for stats in api.values()) == served[0]["batches"] + served[1]["batches"]
    assert (tmp_path / "out" / RECORDS_FILE).exists()


def test_a_run_killed_while_its_batches_run_re_attaches_and_pays_once(task, synchronous, tmp_path):
    sync_results, sync_verdicts, _ = synchronous
    out = tmp_path / "out"
    policy = ScriptedBatches(held=True)
    with serve(rs.gen_responder(), batch_policy=policy) as gen, serve(rs.judge_responder()) as judge:
        args = _args(task, out, gen.base_url, judge.base_url, True)
        process = subprocess.Popen(rs.cli_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env=rs.cli_env(tmp_path / "cache"))
        try:
            deadline = time.monotonic() + 60
            while not (records(out) and gen.stats.batches) and time.monotonic() < deadline:
                assert process.poll() is None, process.stderr.read().decode()
                time.sleep(0.02)
            assert records(out), "no batch was recorded"
            time.sleep(0.2)  # it is polling now
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            process.stderr.close()
        assert process.returncode == -signal.SIGKILL
        assert gen.stats.batches == 1 and gen.stats.completions == 0
        policy.release()
        rerun = rs.cli(*args, cache=tmp_path / "cache")
        served = [gen.stats.snapshot(), judge.stats.snapshot()]
    assert rerun.returncode == 0, rerun.stderr
    results = json.loads(rerun.stdout)
    # Nothing was submitted twice: every custom id the servers saw came in exactly one batch.
    for snapshot in served:
        assert snapshot["completions"] == 0 and set(snapshot["batch_submissions"].values()) == {1}, snapshot
    assert results["api"][results["model"]]["batches_reattached"] == 1
    assert results["metrics"] == sync_results["metrics"]
    assert _verdicts(out) == sync_verdicts
