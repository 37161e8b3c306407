"""Helpers for tests and benchmarks that need real infrastructure on loopback.

`persona_eval.testing.openai_server`: an OpenAI-compatible HTTP server (aiohttp) with
pluggable responders and fault injection; `serve(responder)` starts one on 127.0.0.1.
"""
