"""`ChildServer`: the loopback OpenAI-compatible server in a spawned process, as the benchmarks use it."""

from __future__ import annotations

import json
import urllib.request

import pytest
import reliability_support as rs
from openai_server_support import ChildServer


def _chat(base_url: str, text: str) -> dict:
    body = json.dumps({"model": "judge", "messages": [{"role": "user", "content": text}]}).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def refuse_to_build(latency_ms: float):
    raise RuntimeError("no responder today")


def test_child_server_answers_and_reports_its_stats():
    with rs.ServerProcess("gen", latency_ms=0) as server:
        reply = _chat(server.base_url, "Say something.")
        assert reply["choices"][0]["message"]["content"] == rs.gen_text("Say something.")
        assert server.stats()["served"] == 1
        process = server.process
    assert not process.is_alive()


def test_a_factory_that_fails_is_a_clear_error():
    with pytest.raises(RuntimeError, match="the server process failed to start"):
        ChildServer(refuse_to_build, 0.0, ready_timeout_s=60)
