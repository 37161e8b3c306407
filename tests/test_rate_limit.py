"""Adaptive concurrency of the `openai` backend against a rate-limited loopback server.

The server meters chat completions with a token bucket (`openai_server_support.RateLimit`),
answers 429 with retry-after above it and sends OpenAI's ``x-ratelimit-*`` headers. The
adaptive client paces itself by those headers and finishes with few 429s where a fixed
concurrency meets a storm of them; a burst of 429s halves the window once and pauses every
new request for the retry-after. Speed itself is measured by ``bench/rate_limit.py``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from openai_server_support import FaultPlan, FixedResponder, RateLimit, format_duration, serve

from persona_eval.contracts.records import GenParams, GenRequest
from persona_eval.plugins.generators.openai import OpenAIGenerator
from persona_eval.plugins.generators.openai_rate import Governor, parse_duration, token_cost


def requests_for(n: int) -> list[GenRequest]:
    return [GenRequest(id=f"item-{i}", prompt=f"question number {i}", params=GenParams(max_new_tokens=8))
            for i in range(n)]


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("12ms", 0.012), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("250us", 0.00025),
    ("7.66s", 7.66), ("", None), ("soon", None), ("5x", None), ("-1", None), (None, None),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_format_duration_reads_back():
    for seconds in (0.0004, 0.012, 1.0, 7.25, 61.5, 360.0, 3723.5):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-3)
    assert (format_duration(360), format_duration(1), format_duration(0.0123)) == ("6m0s", "1s", "13ms")


def test_token_cost_counts_characters_and_max_tokens():
    body = {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 16}
    assert token_cost(body) == 26.0 and token_cost({"prompt": "abcd", "max_completion_tokens": 2}) == 3.0


def _post(url: str, content: str):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 4}).encode()
    request = urllib.request.Request(f"{url}/chat/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


def test_the_server_sends_openai_rate_limit_headers_and_429s():
    limit = RateLimit(requests_per_s=2, burst=2, tokens_per_s=100, token_burst=100)
    with serve(FixedResponder("ok"), rate_limit=limit) as server:
        answers = [_post(server.base_url, "three words here") for _ in range(3)]
        assert server.stats.snapshot()["rate_limited"] == 1
    (first, headers), (_, second), (status, refused) = answers
    assert first == 200 and headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1" and second["x-ratelimit-remaining-requests"] == "0"
    assert 0.4 < parse_duration(headers["x-ratelimit-reset-requests"]) <= 0.6  # one request refills in 0.5 s
    assert headers["x-ratelimit-limit-tokens"] == "100" and headers["x-ratelimit-remaining-tokens"] == "93"  # 3 words + 4
    assert status == 429 and refused["retry-after"] == "1" and 0 < int(refused["retry-after-ms"]) <= 500
    assert refused["x-ratelimit-remaining-requests"] == "0"


def _run(server, adaptive: bool, n: int, **options):
    generator = OpenAIGenerator("m", base_url=server.base_url, max_concurrency=16, adaptive=adaptive,
                                backoff=0.01, max_retries=500, total_timeout=120, **options)
    try:
        results = generator.generate(requests_for(n))
    finally:
        generator.close()
    assert [r.text for r in results] == ["fine"] * n
    return generator.stats()


@pytest.mark.parametrize("limit", [RateLimit(requests_per_s=200, burst=5),
                                   RateLimit(requests_per_s=10_000, tokens_per_s=4000, token_burst=100)],
                         ids=["requests", "tokens"])
def test_adaptive_paces_by_the_headers_where_fixed_meets_a_storm(limit):
    n = 120
    with serve(FixedResponder("fine", latency_ms=20), rate_limit=limit) as server:
        adaptive = _run(server, True, n)
        after_adaptive = server.stats.snapshot()["rate_limited"]
        fixed = _run(server, False, n)
        after_fixed = server.stats.snapshot()["rate_limited"] - after_adaptive
    assert adaptive["rate_limited"] == after_adaptive and fixed["rate_limited"] == after_fixed
    assert after_adaptive <= n // 20, adaptive  # a few at most, where the estimate of the bucket was off
    assert after_fixed >= 3 * max(after_adaptive, 6), (after_adaptive, after_fixed)
    assert fixed["concurrency_decreases"] == 0 and fixed["concurrency"] == 16


def test_a_burst_of_429s_halves_the_window_once_and_pauses_every_request():
    arrivals: list[float] = []

    def decide(ctx):  # the first request (the one that goes alone) is answered; the next six get 429
        arrivals.append(time.monotonic())
        return "429" if 2 <= len(arrivals) <= 7 else None

    plan = FaultPlan(decide=decide, retry_after=0.3)
    with serve(FixedResponder("fine", latency_ms=50), faults=plan) as server:
        generator = OpenAIGenerator("m", base_url=server.base_url, max_concurrency=6, backoff=0.01)
        try:
            assert [r.text for r in generator.generate(requests_for(1))] == ["fine"]
            assert [r.text for r in generator.generate(requests_for(12))] == ["fine"] * 12
        finally:
            generator.close()
        stats = generator.stats()
    assert max(arrivals[1:7]) - min(arrivals[1:7]) < 0.1, arrivals  # the six 429s were one burst
    assert stats["rate_limited"] == 6 and stats["retries"] == 6
    assert stats["concurrency_decreases"] == 1 and stats["concurrency_min"] == 3
    # After the burst, nothing was sent before the retry-after had passed.
    assert min(arrivals[7:]) - max(arrivals[1:7]) >= 0.25, arrivals


def test_without_429s_the_window_stays_at_max_concurrency():
    governor = Governor(8)
    assert governor.limit() == 1 and Governor(8, adaptive=False).limit() == 8  # adaptive: the first goes alone
    with serve(FixedResponder("fine")) as server:
        stats = _run(server, True, 40)
    assert stats["concurrency"] == 16 and stats["concurrency_decreases"] == 0 and stats["rate_limited"] == 0
