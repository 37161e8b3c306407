"""A run against loopback servers that misbehave on 20% of requests completes, counts its retries, and scores exactly as a clean run.

Every fault kind of `openai_server_support` is injected (429 with Retry-After,
500, 503, malformed JSON, empty choices, truncated bodies, hangs past the client timeout,
reset connections), on the generation and the judge servers alike. The responders are
deterministic, so the faulty run must reproduce the clean run's verdicts exactly; every
judgment is a verdict or explicitly unscored with a reason; and the retries reported in
``results.json`` (``api``) add up to the faults the servers injected.
"""

from __future__ import annotations

import json

import pytest
import reliability_support as rs
from openai_server_support import FAULT_KINDS, FaultPlan, serve

ITEMS = 24
JUDGMENTS = ITEMS * 2 * 2
# Short backoff keeps the test quick; generous retries make a run-failing streak of faults
# (0.2 ** 9) practically impossible. The 2 s timeout ends injected hangs, while leaving a
# loaded machine's ordinary answers (milliseconds) far from it: every retry is a fault.
CLIENT = "max_concurrency=8,timeout=2,backoff=0.02,backoff_max=0.2,max_retries=8"


def _args(task, out, gen_url, judge_url, client=CLIENT):
    return rs.run_args(task, out, model=f"openai:test-model,base_url={gen_url},{client}",
                       baseline=f"openai:base-model,base_url={gen_url},{client}",
                       judge_model=f"openai:judge,base_url={judge_url},{client}")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return rs.write_task(tmp_path_factory.mktemp("fault-task"), ITEMS)


@pytest.fixture(scope="module")
def clean(task, tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    with serve(rs.gen_responder()) as gen, serve(rs.judge_responder()) as judge:
        completed = rs.cli(*_args(task, root / "out", gen.base_url, judge.base_url), cache=root / "cache")
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout), rs.records(root / "out" / "judgments.jsonl")


def test_twenty_percent_faults_complete_with_counted_retries(task, clean, tmp_path):
    clean_results, clean_judgments = clean
    plans = [FaultPlan(rate=0.2, kinds=FAULT_KINDS, seed=seed, retry_after=0.05, hang_s=30) for seed in (1, 2)]
    with serve(rs.gen_responder(), faults=plans[0]) as gen, serve(rs.judge_responder(), faults=plans[1]) as judge:
        completed = rs.cli(*_args(task, tmp_path / "out", gen.base_url, judge.base_url), cache=tmp_path / "cache")
        served = [gen.stats.snapshot(), judge.stats.snapshot()]
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)

    faults = {kind: sum(s["faults"].get(kind, 0) for s in served) for kind in FAULT_KINDS}
    total_faults = sum(faults.values())
    requests = sum(s["completions"] for s in served)
    assert 0.1 < total_faults / requests < 0.32, (faults, requests)
    assert all(count > 0 for count in faults.values()), f"some fault kinds never fired: {faults}"

    # Every judgment is a verdict or unscored with a reason; none is missing or doubled.
    judgments = rs.records(tmp_path / "out" / "judgments.jsonl")
    keys = {(r["item_id"], r["criterion"], r["order"]) for r in judgments}
    assert len(judgments) == len(keys) == JUDGMENTS
    for record in judgments:
        assert record["winner"] in ("A", "B") or (record["winner"] is None and record["unscored_reason"]), record
    unscored = [r for r in judgments if r["winner"] is None]
    assert unscored and all("Verdict" in r["unscored_reason"] for r in unscored)

    # Retries are in the results, by backend and reason, and add up to the injected faults.
    api = results["api"]
    assert set(api) == {results["model"], results["baseline"], results["judge_model"]}
    assert sum(stats["retries"] for stats in api.values()) == total_faults
    assert sum(stats["failures"] for stats in api.values()) == 0
    reasons: dict[str, int] = {}
    for stats in api.values():
        for reason, count in stats["retry_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    for kind, reason in (("429", "HTTP 429"), ("500", "HTTP 500"), ("503", "HTTP 503"), ("empty", "empty choices"),
                         ("malformed", "malformed JSON"), ("hang", "timeout")):
        assert reasons.get(reason) == faults[kind], (kind, reasons, faults)
    assert reasons.get("connection") == faults["truncated"] + faults["reset"], (reasons, faults)
    assert sum(stats["requests"] for stats in api.values()) == requests
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["api"] == api

    # The faults changed nothing that was measured.
    strip = lambda records: {(r["item_id"], r["criterion"], r["order"]): (r["winner"], r["raw"], r["unscored_reason"]) for r in records}  # noqa: E731
    assert strip(judgments) == strip(clean_judgments)
    assert results["metrics"] == clean_results["metrics"]


def test_exhausted_retries_fail_the_run_in_one_line_then_resume(task, clean, tmp_path):
    """A judge server that answers only 503: exit 1 naming the item; healed, the rerun finishes from the records."""
    clean_results, _ = clean
    client = "max_concurrency=8,timeout=1,backoff=0.01,backoff_max=0.05,max_retries=2"
    down = FaultPlan(rate=1.0, kinds=("503",))
    with serve(rs.gen_responder()) as gen, serve(rs.judge_responder(), faults=down) as judge:
        args = _args(task, tmp_path / "out", gen.base_url, judge.base_url, client)
        failed = rs.cli(*args, cache=tmp_path / "cache")
        assert failed.returncode == 1, failed.stderr
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), failed.stderr
        assert "failed after 3 attempts" in lines[0] and "HTTP 503" in lines[0] and "item 'item-" in lines[0]
        assert not (tmp_path / "out" / "results.json").exists()
        assert len(rs.records(tmp_path / "out" / "generations.jsonl")) == ITEMS * 2  # generation was kept

        judge.faults = FaultPlan()  # the server recovers
        served_before = gen.stats.snapshot()["completions"]
        healed = rs.cli(*args, cache=tmp_path / "cache")
        assert gen.stats.snapshot()["completions"] == served_before  # nothing regenerated
    assert healed.returncode == 0, healed.stderr
    assert json.loads(healed.stdout)["metrics"] == clean_results["metrics"]
