"""The `openai` generator against a real OpenAI-compatible HTTP server on loopback.

The server is `persona_eval.serving.openai_server` (aiohttp on 127.0.0.1, a free port), with
the fault injection of `openai_server_support` for the retry paths and a sentinel key to
prove it never leaks.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import time

import pytest
from openai_server_support import FaultPlan, FixedResponder, register_fault, serve

from persona_eval.contracts.records import GenParams, GenRequest
from persona_eval.errors import RunError, UsageError
from persona_eval.plugins.generators.openai import OpenAIGenerator
from persona_eval.serving.openai_server import APIError, ChatReply, GeneratorResponder

SENTINEL = "sk-SENTINEL-5f1e2d3c4b5a69788796a5b4"
KEY_ENV = "PERSONA_EVAL_TEST_OPENAI_KEY"


async def echo(chat):
    """Answers out of order (random delay) with what it was sent, so order bugs show."""
    await asyncio.sleep(random.uniform(0, 0.03))
    system = [m["content"] for m in chat.messages if m["role"] == "system"]
    return ChatReply(text=f" echo:{chat.messages[1 if system else 0]['content']} ", completion_tokens=2)


def requests_for(n: int, **kwargs) -> list[GenRequest]:
    return [GenRequest(id=f"item-{i}", prompt=f"question {i}", **kwargs) for i in range(n)]


def make(server, model: str = "m", **options) -> OpenAIGenerator:
    options.setdefault("backoff", 0.01)
    options.setdefault("api_key_env", KEY_ENV)
    return OpenAIGenerator(model, base_url=server.base_url, **options)


@pytest.fixture(autouse=True)
def sentinel_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SENTINEL)


def test_success_keeps_order_and_sends_system_and_prefill():
    with serve(echo, models=["m"], api_key=SENTINEL) as server:
        generator = make(server, max_concurrency=8)
        try:
            reqs = requests_for(20, params=GenParams(max_new_tokens=7, seed=3), system="Be brief.")
            reqs[0].response_prefix = "Sure,"
            results = generator.generate(reqs)
        finally:
            generator.close()
        assert [r.text for r in results] == [f"echo:question {i}" for i in range(20)]
        assert results[0].finish_reason == "stop" and results[0].output_tokens == 2
        # The loopback server counts whitespace words: "Be brief." + "question 0" + the prefix "Sure,".
        assert (results[0].input_tokens, results[0].usage_source) == (5, "api") and results[1].input_tokens == 4
        first = next(b for b in server.stats.bodies if b["messages"][1]["content"] == "question 0")
        assert first["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "question 0"},
            {"role": "assistant", "content": "Sure,"},
        ]
        assert first["max_tokens"] == 7 and first["seed"] == 3 and first["temperature"] == 0.0
        assert generator.stats() == {"requests": 20, "retries": 0, "failures": 0, "items": 20, "retry_reasons": {},
                                     "rate_limited": 0, "input_tokens": 81, "output_tokens": 40, "concurrency": 8,
                                     "concurrency_min": 8, "concurrency_decreases": 0}
        assert generator.preferred_batch_size == 32


def test_prefill_append_mode_and_registry_spec():
    from persona_eval.contracts.factories import build_generator

    with serve(echo) as server:
        generator = build_generator(f"openai-compatible:m,base_url={server.base_url},prefill=append,backoff=0.01")
        try:
            request = GenRequest(id="x", prompt="Q?", response_prefix=" [RESULT]")
            assert generator.generate([request])[0].text == "echo:Q? [RESULT]"
        finally:
            generator.close()
        assert server.stats.bodies[-1]["messages"] == [{"role": "user", "content": "Q? [RESULT]"}]


def test_concurrency_is_bounded():
    with serve(FixedResponder("ok", latency_ms=100)) as server:
        generator = make(server, max_concurrency=4)
        try:
            started = time.monotonic()
            assert len(generator.generate(requests_for(24))) == 24
            elapsed = time.monotonic() - started
        finally:
            generator.close()
        assert server.stats.max_in_flight == 4
        assert elapsed >= 6 * 0.1 * 0.95  # 24 requests / 4 at a time x 100 ms


def test_429_with_retry_after_and_500_are_retried_and_counted():
    plan = FaultPlan(sequence=["429", "500"], retry_after=0.4)
    with serve(FixedResponder("fine"), faults=plan) as server:
        generator = make(server)
        try:
            started = time.monotonic()
            assert generator.generate(requests_for(1))[0].text == "fine"
            elapsed = time.monotonic() - started
        finally:
            generator.close()
        assert elapsed >= 0.4, "Retry-After was not honoured"
        stats = generator.stats()
        assert stats["retries"] == 2 and stats["requests"] == 3 and stats["failures"] == 0
        assert stats["retry_reasons"] == {"HTTP 429": 1, "HTTP 500": 1}
        assert server.stats.snapshot()["faults"] == {"429": 1, "500": 1}


def test_every_fault_kind_is_survived_once_per_item():
    kinds = ["429", "500", "503", "malformed", "empty", "truncated", "reset"]
    plan = FaultPlan(first_attempts=1, kinds=kinds, retry_after=0.01, seed=7)
    with serve(echo, faults=plan) as server:
        generator = make(server, max_concurrency=8)
        try:
            results = generator.generate(requests_for(40))
        finally:
            generator.close()
        assert [r.text for r in results] == [f"echo:question {i}" for i in range(40)]
        stats = generator.stats()
        assert stats["retries"] == 40 and stats["requests"] == 80 and stats["failures"] == 0
        assert sum(server.stats.faults.values()) == 40
        assert set(stats["retry_reasons"]) <= {"HTTP 429", "HTTP 500", "HTTP 503", "malformed JSON", "empty choices",
                                               "connection"}


def test_hang_past_timeout_is_retried():
    with serve(FixedResponder("late but fine"), faults=FaultPlan(sequence=["hang"], hang_s=5)) as server:
        generator = make(server, timeout=0.3)
        try:
            started = time.monotonic()
            assert generator.generate(requests_for(1))[0].text == "late but fine"
            assert time.monotonic() - started < 2.5
        finally:
            generator.close()
        assert generator.stats()["retry_reasons"] == {"timeout": 1}


def test_total_timeout_names_the_item():
    plan = FaultPlan(rate=1.0, kinds=["hang"], hang_s=10)
    with serve(FixedResponder("never"), faults=plan) as server:
        generator = make(server, timeout=0.3, total_timeout=1.0, max_retries=50)
        try:
            started = time.monotonic()
            with pytest.raises(RunError, match=r"item 'item-0' ran out of total_timeout=1s"):
                generator.generate(requests_for(1))
            assert time.monotonic() - started < 2.5
        finally:
            generator.close()
        assert generator.stats()["failures"] == 1


def test_exhausted_retries_name_the_item_and_never_the_key():
    async def echo_auth(ctx):
        from aiohttp import web

        # A hostile server that puts the presented credentials into its error text.
        return web.json_response({"error": {"message": f"boom for {ctx.request.headers.get('Authorization')}"}},
                                 status=502)

    register_fault("echo-auth-502", echo_auth)
    with serve(FixedResponder("x"), faults=FaultPlan(rate=1.0, kinds=["echo-auth-502"])) as server:
        generator = make(server, max_retries=2)
        try:
            with pytest.raises(RunError) as caught:
                generator.generate(requests_for(1))
        finally:
            generator.close()
    message = str(caught.value)
    assert "item 'item-0' failed after 3 attempts" in message and "HTTP 502" in message
    assert "boom for Bearer ***" in message
    assert SENTINEL not in message and "\n" not in message
    assert generator.stats()["failures"] == 1 and generator.stats()["retries"] == 2


def test_401_is_a_clear_usage_error_without_the_key(monkeypatch):
    with serve(FixedResponder("x"), api_key="the-right-key") as server:
        generator = make(server)
        try:
            with pytest.raises(UsageError) as caught:
                generator.generate(requests_for(3))
        finally:
            generator.close()
        assert server.stats.statuses[401] >= 1  # the server did echo the (wrong) key in its body
    message = str(caught.value)
    assert "authentication failed" in message and "HTTP 401" in message and f"${KEY_ENV}" in message
    assert SENTINEL not in message and "\n" not in message
    for text in (json.dumps(generator.identity()), repr(generator), json.dumps(generator.stats())):
        assert SENTINEL not in text
    assert caught.value.exit_code == 2


def test_unset_key_sends_no_authorization(monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with serve(FixedResponder("x"), api_key="needed") as server:
        generator = make(server)
        try:
            with pytest.raises(UsageError, match="it is not set"):
                generator.generate(requests_for(1))
        finally:
            generator.close()


def test_404_unknown_model():
    with serve(FixedResponder("x"), models=["served-model"]) as server:
        generator = make(server, model="no-such-model")
        try:
            with pytest.raises(UsageError, match=r"model 'no-such-model' .*not found.*HTTP 404"):
                generator.generate(requests_for(2))
        finally:
            generator.close()


def test_400_is_not_retried_and_names_the_item():
    def reject(chat):
        raise APIError(400, "This model's maximum context length is 8 tokens")

    with serve(reject) as server:
        generator = make(server)
        try:
            with pytest.raises(RunError, match=r"rejected item 'item-0' \(HTTP 400\): This model's maximum context"):
                generator.generate(requests_for(1))
        finally:
            generator.close()
        assert server.stats.completions == 1


def test_connection_refused_fails_fast():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    generator = OpenAIGenerator("m", base_url=f"http://127.0.0.1:{port}/v1", backoff=0.01, api_key_env=KEY_ENV)
    try:
        started = time.monotonic()
        with pytest.raises(RunError, match="cannot connect.*is the server running"):
            generator.generate(requests_for(2))
        assert time.monotonic() - started < 5
    finally:
        generator.close()


def test_choice_probs_from_top_logprobs():
    top = {"A": math.log(0.6), " A": math.log(0.1), "B": math.log(0.2), "C": math.log(0.1)}
    with serve(FixedResponder("A", top_logprobs=top)) as server:
        with_lp = make(server, logprobs=True)
        without = make(server)
        try:
            probs = with_lp.choice_probs(requests_for(2), ["A", "B"])
            assert with_lp.choice_probs([], ["A", "B"]) == []
            assert without.choice_probs(requests_for(1), ["A", "B"]) is None
        finally:
            with_lp.close()
            without.close()
        body = server.stats.bodies[-1]
        assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert probs[0]["A"] == pytest.approx(0.7 / 0.9) and probs[1]["B"] == pytest.approx(0.2 / 0.9)
    with serve(FixedResponder("A")) as server:  # a server that ignores logprobs
        generator = make(server, logprobs=True)
        try:
            assert generator.choice_probs(requests_for(1), ["A", "B"]) is None
        finally:
            generator.close()


def test_identity_and_bad_options():
    generator = OpenAIGenerator("gpt-4o", base_url="https://api.example.com/v1/", api_key_env=KEY_ENV)
    assert generator.identity() == {
        "backend": "openai", "base_url": "https://api.example.com/v1", "model": "gpt-4o",
        "prefill": "assistant", "token_param": "max_tokens", "logprobs": False,
    }
    with pytest.raises(UsageError, match="must not carry credentials"):
        OpenAIGenerator("m", base_url=f"http://user:{SENTINEL}@127.0.0.1:1/v1")
    with pytest.raises(UsageError, match="prefill"):
        OpenAIGenerator("m", prefill="bogus")
    with pytest.raises(UsageError, match="max_concurrency"):
        OpenAIGenerator("m", max_concurrency=0)
    with pytest.raises(UsageError, match="base_url"):
        OpenAIGenerator("m", base_url="127.0.0.1:8000")


def tiny_demo_task(folder) -> str:
    """The demo task with 8-token answers (two CPU cores are shared), data read in place."""
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "tasks" / "demo"
    text = (demo / "demo.yaml").read_text()
    text = text.replace("name: demo\n", "name: demo-tiny\n").replace("max_new_tokens: 64", "max_new_tokens: 8")
    text = text.replace("test: data/test.jsonl", f"test: {demo / 'data' / 'test.jsonl'}")
    text = text.replace("train: data/train.jsonl", f"train: {demo / 'data' / 'train.jsonl'}")
    path = folder / "demo-tiny.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_embedded_model_over_http_matches_in_process(embedded_model_dir, tmp_path):
    from persona_eval.contracts.factories import build_generator
    from persona_eval.pipeline.run import Run, RunOptions

    local = build_generator("hf:embedded")
    probe = GenRequest(id="p", prompt="Answer A or B.", params=GenParams(max_new_tokens=1), response_prefix="Answer:")
    with serve(GeneratorResponder(local, batch_wait_ms=20), models=["embedded"]) as server:
        remote = OpenAIGenerator("embedded", base_url=server.base_url, logprobs=True, api_key_env=KEY_ENV)
        try:
            remote_p = remote.choice_probs([probe], ["A", "B"])[0]
        finally:
            remote.close()
        assert remote_p["A"] == pytest.approx(local.choice_probs([probe], ["A", "B"])[0]["A"], abs=1e-4)

        spec = f"openai:embedded,base_url={server.base_url},api_key_env={KEY_ENV}"
        options = RunOptions(task=tiny_demo_task(tmp_path), model=spec, baseline="hf:embedded",
                             judge_model="hf:embedded", limit=1, output_dir=str(tmp_path / "run"), bootstrap=10)
        results = Run(options, progress=False).execute()
        assert server.stats.served == 2  # the probe and the one test generation went over HTTP

    records = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    over_http = next(r for r in records if r["role"] == "test")
    # The same request in-process (greedy) gives the same text.
    direct = local.generate([GenRequest(id="d", prompt=over_http["input"], params=GenParams(max_new_tokens=8))])
    assert over_http["response"] == direct[0].text and over_http["response"]
    assert results["identities"]["test"]["backend"] == "openai"
    config_text = (tmp_path / "run" / "config.json").read_text() + json.dumps(results)
    assert SENTINEL not in config_text


def test_serve_openai_command_serves_a_generator(tmp_path):
    """`persona-eval serve-openai` in its own process, serving precomputed outputs."""
    import os
    import re
    import signal
    import subprocess
    import sys

    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text("\n".join(json.dumps({"prompt": f"question {i}", "response": f"answer {i}"}) for i in range(3)))
    command = [sys.executable, "-c", "from persona_eval.cli import main; main()", "serve-openai",
               "--model", f"file:{outputs}", "--port", "0", "--served-name", "outputs"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        seen = []
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
            url = found.group(1) if found else None
        assert url, "".join(seen)
        generator = OpenAIGenerator("outputs", base_url=url, api_key_env=KEY_ENV)
        try:
            texts = [r.text for r in generator.generate([GenRequest(id=f"r{i}", prompt=f"question {i}") for i in (2, 0)])]
        finally:
            generator.close()
        assert texts == ["answer 2", "answer 0"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(15) == 0
        finally:
            if process.poll() is None:
                process.kill()
