"""The `openai` generator (alias `openai-compatible`): any OpenAI-compatible chat endpoint.

Spec: ``openai:MODEL[,base_url=http://127.0.0.1:8000/v1][,max_concurrency=32][,timeout=60]
[,total_timeout=600][,max_retries=6][,api_key_env=OPENAI_API_KEY][,logprobs=false]
[,top_logprobs=20][,prefill=assistant|continue|append][,backoff=0.5][,backoff_max=30]
[,token_param=max_tokens|max_completion_tokens][,adaptive=true][,batch=false][,batch_fallback=none|sync]
[,batch_poll_s=10][,batch_poll_max_s=120][,batch_completion_window=24h][,batch_max_requests=50000]
[,batch_max_bytes=200000000]``.

- The key is read from the environment variable named by ``api_key_env`` (default
  OPENAI_API_KEY; unset = no Authorization header, as local servers need none). It is never
  put in the identity, config, results or logs, and is redacted from every error message.
- `generate(requests)` is synchronous but sends the whole batch concurrently, at most
  ``max_concurrency`` requests in flight, on an asyncio loop in a background thread (one
  aiohttp ClientSession, connections reused across batches; httpx's async pool was ~6x
  slower at 32 concurrent requests on loopback). `preferred_batch_size` is
  4 x max_concurrency so the generate stage hands over big batches.
- Retries (up to ``max_retries``, exponential backoff ``backoff * 2**n`` capped at
  ``backoff_max``, with jitter) on 429 (its Retry-After / retry-after-ms is honoured),
  408/409/5xx, timeouts (``timeout`` per attempt), connection errors, truncated bodies,
  malformed JSON and empty choices. ``total_timeout`` (default 10 x timeout) bounds one
  item across all its attempts and waits. 401/403 and 404 are `UsageError`s at once;
  exhausted retries or the total timeout are a `RunError` naming the item id and the
  last failure. `stats()` -> {requests, retries, failures, items, retry_reasons, rate_limited
  (429s), input_tokens, output_tokens (the API's usage, summed), concurrency, concurrency_min,
  concurrency_decreases}, plus with batch=true {batches, batch_requests, batches_reattached,
  batch_resubmitted, batch_fallback_sync, batch_polls, batch_api_calls}.
- ``adaptive`` (default true): the requests in flight adapt to the server's rate limits
  (`openai_rate.Governor`: AIMD on 429s, a pause for retry-after, pacing by the
  ``x-ratelimit-*`` headers), never above ``max_concurrency``; false: a fixed
  ``max_concurrency``.
- ``batch=true``: `generate` sends its requests as OpenAI Batch API jobs (`openai_batch`: half
  the price, up to ``batch_completion_window``), with the batch ids kept in the run folder
  (`bind_run_dir`) so a killed run re-attaches; ``preferred_batch_size`` is then
  ``batch_max_requests`` so a stage's cache misses come in one call. `choice_probs` stays
  synchronous.
- Usage: each result's ``input_tokens``/``output_tokens`` are the response's ``usage``
  (``prompt_tokens``/``completion_tokens``) with ``usage_source="api"``; None where it has none.
- ``GenRequest.system`` becomes a system message. ``GenRequest.response_prefix`` is sent, by
  ``prefill``: ``assistant`` (default) as a final assistant message, which servers that
  continue it (persona_eval's own server, Anthropic-style APIs) treat as a prefill;
  ``continue`` the same plus vLLM's ``continue_final_message=true,
  add_generation_prompt=false`` so vLLM continues it exactly; ``append`` appended to the
  user message, for APIs that answer a trailing assistant message afresh. The returned text
  is only what the model generated after the prefix (like the `hf` backend).
- `choice_probs` (with ``logprobs=true``): one request per item with ``max_tokens=1,
  logprobs=true, top_logprobs=N``; a choice's probability is the summed probability of the
  top tokens equal to it after stripping spaces, renormalized over the choices (uniform when
  none appears). Returns None when logprobs are off or the server sends none.
- `identity()`: backend, base URL without credentials, model, prefill mode, logprob settings.
  Per-request generation parameters (max tokens, temperature, top_p, seed, stop) are part of
  each cache key through `GenRequest.cache_input`.
"""

from __future__ import annotations

import atexit
import email.utils
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import Counter
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenRequest, GenResult
from persona_eval.errors import RunError, UsageError
from persona_eval.lazy_import import LazyModule
from persona_eval.plugins.generators.common import server_message
from persona_eval.plugins.generators.openai_batch import BATCH_MAX_BYTES, BATCH_MAX_REQUESTS, BatchClient
from persona_eval.plugins.generators.openai_rate import Governor, token_cost

asyncio = LazyModule("asyncio")  # imported on first use: `persona-eval --help` imports this module

logger = logging.getLogger(__name__)

PREFILL_MODES = ("assistant", "continue", "append")
RETRY_STATUSES = {408, 409, 429}


class _Retry(Exception):
    """One failed attempt worth retrying: a short reason and an optional server-asked delay."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


def _parse_retry_after(headers) -> float | None:
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(name: str, value: Any, cast):
    if cast is int and isinstance(value, float) and not value.is_integer():
        raise UsageError(f"openai: {name}={value!r} is not an integer")
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise UsageError(f"openai: {name}={value!r} is not a{'n integer' if cast is int else ' number'}") from None


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise UsageError(f"openai: {name}={value!r}; use true or false")


class OpenAIGenerator(Generator):
    backend = "openai"
    # Calls share one event loop and connection pool (created by the first call, which the
    # harness runs alone), so a second batch can start while the tail of the first finishes.
    max_concurrent_calls = 2
    # The endpoint does the work: --executor ray keeps it in the driver (batch ids live in the run folder).
    distributable = False

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        max_concurrency: int = 32,
        timeout: float = 60.0,
        total_timeout: float | None = None,
        max_retries: int = 6,
        api_key_env: str = "OPENAI_API_KEY",
        logprobs: bool = False,
        top_logprobs: int = 20,
        prefill: str = "assistant",
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        token_param: str = "max_tokens",
        adaptive: bool = True,
        batch: bool = False,
        batch_fallback: str = "none",
        batch_poll_s: float = 10.0,
        batch_poll_max_s: float = 120.0,
        batch_completion_window: str = "24h",
        batch_max_requests: int = BATCH_MAX_REQUESTS,
        batch_max_bytes: int = BATCH_MAX_BYTES,
    ):
        self.model = str(model)
        self.base_url = self._check_url(str(base_url))
        self.max_concurrency = _number("max_concurrency", max_concurrency, int)
        self.timeout = _number("timeout", timeout, float)
        self.total_timeout = _number("total_timeout", total_timeout, float) if total_timeout is not None else 10.0 * self.timeout
        self.max_retries = _number("max_retries", max_retries, int)
        self.api_key_env = str(api_key_env)
        self.logprobs = _flag("logprobs", logprobs)
        self.top_logprobs = _number("top_logprobs", top_logprobs, int)
        self.prefill = str(prefill)
        self.backoff = _number("backoff", backoff, float)
        self.backoff_max = _number("backoff_max", backoff_max, float)
        self.token_param = str(token_param)
        if self.max_concurrency < 1:
            raise UsageError("openai: max_concurrency must be at least 1")
        if self.timeout <= 0 or self.total_timeout <= 0:
            raise UsageError("openai: timeout and total_timeout must be positive (seconds)")
        if self.max_retries < 0 or self.backoff < 0 or self.backoff_max < 0:
            raise UsageError("openai: max_retries, backoff and backoff_max must not be negative")
        if self.prefill not in PREFILL_MODES:
            raise UsageError(f"openai: prefill={self.prefill!r}; use one of {', '.join(PREFILL_MODES)}")
        if self.token_param not in ("max_tokens", "max_completion_tokens"):
            raise UsageError("openai: token_param must be max_tokens or max_completion_tokens")
        if not 0 <= self.top_logprobs <= 20:
            raise UsageError("openai: top_logprobs must be within 0..20")
        # Read once; kept out of identity(), repr and every message.
        self._api_key = os.environ.get(self.api_key_env) or None
        self.preferred_batch_size = 4 * self.max_concurrency
        # How requests are sent, never what is asked: none of these options is in identity(), so
        # batch and synchronous runs (adaptive or not) share cache entries and give the same answers.
        self.adaptive = _flag("adaptive", adaptive)
        self.batch = _flag("batch", batch)
        self._batches: BatchClient | None = None
        if str(batch_fallback) not in ("none", "sync"):
            raise UsageError(f"openai: batch_fallback={batch_fallback!r}; use none or sync")
        if self.batch:
            self._batches = BatchClient(
                self, fallback=str(batch_fallback), poll_s=_number("batch_poll_s", batch_poll_s, float),
                poll_max_s=_number("batch_poll_max_s", batch_poll_max_s, float),
                completion_window=str(batch_completion_window),
                max_requests=_number("batch_max_requests", batch_max_requests, int),
                max_bytes=_number("batch_max_bytes", batch_max_bytes, int),
            )
            self.preferred_batch_size = self._batches.max_requests
        #: Optional ``callable(text)`` that shows a waiting batch's status (set by a display; logged at INFO anyway).
        self.progress_hook = None
        self._governor: Governor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client = None
        self._connected = False
        self._stats_lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._retry_reasons: Counter[str] = Counter()
        self._warned_no_logprobs = False

    def __repr__(self) -> str:
        return f"OpenAIGenerator(model={self.model!r}, base_url={self.base_url!r})"

    @staticmethod
    def _check_url(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = "" if "@" in url else f" {url!r}"  # never echo what may be credentials
            raise UsageError(f"openai: base_url{shown} must look like http://HOST:PORT/v1")
        if parts.username or parts.password:
            raise UsageError("openai: base_url must not carry credentials; put the key in the api_key_env variable")
        if parts.query or parts.fragment:
            raise UsageError("openai: base_url must not have a query or fragment")
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    # -- identity and counters -----------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = {
            "backend": self.backend,
            "base_url": self.base_url,
            "model": self.model,
            "prefill": self.prefill,
            "token_param": self.token_param,
            "logprobs": self.logprobs,
        }
        if self.logprobs:
            identity["top_logprobs"] = self.top_logprobs
        return identity

    def stats(self) -> dict[str, Any]:
        """HTTP attempts sent, retries, items that finally failed, items done, retries by reason, 429s,
        the API's token usage, the adaptive concurrency, and (batch=true) the batch counters."""
        governor = self._governor or Governor(self.max_concurrency, self.adaptive)
        with self._stats_lock:
            out = {
                "requests": self._counts["requests"],
                "retries": self._counts["retries"],
                "failures": self._counts["failures"],
                "items": self._counts["items"],
                "retry_reasons": dict(self._retry_reasons),
                "rate_limited": self._counts["rate_limited"],
                "input_tokens": self._counts["input_tokens"],
                "output_tokens": self._counts["output_tokens"],
                **governor.stats(),
            }
            if self.batch:
                out.update({name: self._counts[name] for name in (
                    "batches", "batch_requests", "batches_reattached", "batch_resubmitted", "batch_fallback_sync",
                    "batch_polls", "batch_api_calls")})
            return out

    def _count(self, name: str, reason: str | None = None, amount: int = 1) -> None:
        with self._stats_lock:
            self._counts[name] += amount
            if reason:
                self._retry_reasons[reason] += 1

    def _redact(self, text: str) -> str:
        key = self._api_key
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return text

    def unapplied_params(self, params) -> list[str]:
        """The settings of `params` a chat-completions body cannot carry (min_new_tokens, repetition_penalty)."""
        from persona_eval.plugins.generators.sampling import unapplied_params

        return unapplied_params("openai", params)

    # -- request bodies ------------------------------------------------------------------

    def messages(self, request: GenRequest) -> list[dict[str, str]]:
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        prefix = request.response_prefix or ""
        if prefix and self.prefill == "append":
            messages.append({"role": "user", "content": request.prompt + prefix})
        else:
            messages.append({"role": "user", "content": request.prompt})
            if prefix:
                messages.append({"role": "assistant", "content": prefix})
        return messages

    def body(self, request: GenRequest, *, probe: bool = False) -> dict[str, Any]:
        params = request.params
        body: dict[str, Any] = {"model": self.model, "messages": self.messages(request)}
        if probe:
            body.update({self.token_param: 1, "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs})
        else:
            body.update({self.token_param: params.max_new_tokens, "temperature": params.temperature, "seed": params.seed})
            if params.temperature > 0 and params.top_p < 1.0:
                body["top_p"] = params.top_p
            if params.stop:
                body["stop"] = list(params.stop)
        if request.response_prefix and self.prefill == "continue":
            body.update({"continue_final_message": True, "add_generation_prompt": False})
        return body

    def render_input(self, request: GenRequest) -> str:
        """The model's input as the request body carries it: its ``messages`` (or ``prompt``), as indented JSON."""
        body = self.body(request)
        return json.dumps(body["messages"] if "messages" in body else body["prompt"], indent=2, ensure_ascii=False)

    # -- the event loop thread -----------------------------------------------------------

    def _run(self, coroutine):
        if self._loop is None or not self._loop.is_running():
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="persona-eval-openai", daemon=True)
            self._thread.start()
            atexit.register(_close_at_exit, weakref.ref(self))
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller: stop the requests in flight too
            raise

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or not loop.is_running():
            return

        async def shutdown():
            if self._client is not None:
                await self._client.close()
                self._client = None

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        self._loop = self._thread = None
        if self._governor is not None:  # its counters stay for stats(); its timers belonged to the stopped loop
            self._governor.detach()

    def _ensure_client(self):
        if self._client is None:
            import aiohttp

            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            connector = aiohttp.TCPConnector(limit=self.max_concurrency)
            self._client = aiohttp.ClientSession(connector=connector, headers=headers, trust_env=False)
        if self._governor is None:  # what it learned of the server's limits carries over from call to call
            self._governor = Governor(self.max_concurrency, self.adaptive)
        return self._client

    # -- one item, with retries ----------------------------------------------------------

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + random.uniform(0, 0.05 * max(retry_after, 0.1))
        base = min(self.backoff_max, self.backoff * (2 ** (attempt - 1)))
        return base / 2 + random.uniform(0, base / 2)

    async def _attempt(self, session, url: str, item_id: str, body: dict[str, Any], limit: float, total_bound: bool,
                       slot=None):
        """One HTTP attempt within `limit` seconds: the parsed response, or _Retry / an error."""
        import aiohttp

        try:
            async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=limit)) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
            if slot is not None:  # what the governor learns from this answer (its status, rate-limit headers)
                slot.status, slot.headers = status, headers
            if status == 429:
                self._count("rate_limited")
        except asyncio.TimeoutError:
            if total_bound:
                raise
            raise _Retry("timeout", f"no complete answer within timeout={self.timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise _Retry("connect", f"cannot connect to {self.base_url} ({exc.strerror or type(exc).__name__})") from None
        except aiohttp.ClientError as exc:  # dropped connections, truncated bodies, protocol errors
            raise _Retry("connection", f"{type(exc).__name__}: {exc}") from None
        return self._check_response(item_id, status, headers, raw)

    async def _post(self, item_id: str, body: dict[str, Any]) -> dict[str, Any]:
        session = self._ensure_client()
        governor = self._governor
        assert governor is not None
        cost = token_cost(body)
        loop = asyncio.get_running_loop()
        # The total timeout starts with the first attempt, not while the item queues for a slot.
        deadline: float | None = None
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        while True:
            attempt += 1
            try:
                slot = await governor.acquire(cost)
                try:
                    now = loop.time()
                    deadline = now + self.total_timeout if deadline is None else deadline
                    remaining = deadline - now
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    self._count("requests")
                    limit = min(self.timeout, remaining)
                    data = await self._attempt(session, url, item_id, body, limit, total_bound=limit < self.timeout,
                                               slot=slot)
                    self._connected = True
                    return data
                finally:
                    governor.release(slot)
            except _Retry as failure:
                if failure.reason == "connect" and not self._connected and attempt >= 2:
                    self._count("failures")
                    raise RunError(self._redact(f"openai: {failure.detail}; is the server running?")) from None
                if attempt > self.max_retries:
                    self._count("failures")
                    raise RunError(self._redact(
                        f"openai: item {item_id!r} failed after {attempt} attempts at {self.base_url}: "
                        f"{failure.reason}: {failure.detail}"
                    )) from None
                wait = self._delay(attempt, failure.retry_after)
                if deadline is not None and loop.time() + wait >= deadline:
                    self._count("failures")
                    raise RunError(self._redact(
                        f"openai: item {item_id!r} ran out of total_timeout={self.total_timeout:g}s after "
                        f"{attempt} attempts at {self.base_url} (last: {failure.reason}: {failure.detail})"
                    )) from None
                self._count("retries", failure.reason)
                logger.info("openai: item %s: %s; retry %d in %.2fs", item_id, failure.reason, attempt, wait)
                await asyncio.sleep(wait)
            except asyncio.TimeoutError:
                self._count("failures")
                raise RunError(
                    f"openai: item {item_id!r} ran out of total_timeout={self.total_timeout:g}s after "
                    f"{attempt} attempts at {self.base_url}"
                ) from None

    def _check_response(self, item_id: str, status: int, headers, raw: bytes) -> dict[str, Any]:
        if status in (401, 403):
            raise UsageError(self._redact(
                f"openai: authentication failed at {self.base_url} (HTTP {status}): {server_message(raw)}; "
                f"check the key in ${self.api_key_env}" + ("" if self._api_key else " (it is not set)")
            ))
        if status == 404:
            raise UsageError(self._redact(
                f"openai: model {self.model!r} or its endpoint was not found at {self.base_url} "
                f"(HTTP 404): {server_message(raw)}"
            ))
        if status in RETRY_STATUSES or status >= 500:
            raise _Retry(f"HTTP {status}", self._redact(server_message(raw)), _parse_retry_after(headers))
        if status != 200:
            raise RunError(self._redact(
                f"openai: the server rejected item {item_id!r} (HTTP {status}): {server_message(raw)}"
            ))
        try:
            data = json.loads(raw)
        except ValueError:
            raise _Retry("malformed JSON", f"{len(raw)} bytes that do not parse") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise _Retry("empty choices", "the response has no choices")
        first = choices[0]
        if not isinstance(first, dict) or not isinstance(first.get("message"), dict):
            raise _Retry("malformed JSON", "the first choice has no message")
        return data

    async def _gather(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        tasks = [asyncio.ensure_future(self._post(item_id, body)) for item_id, body in items]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
            if failed or any(not t.done() for t in tasks):
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if failed:
            # A usage error (bad key, unknown model) says more than the item errors it caused.
            usage = [t.exception() for t in failed if isinstance(t.exception(), UsageError)]
            raise (usage or [failed[0].exception()])[0]
        return [task.result() for task in tasks]

    # -- the Generator interface ---------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        items = [(r.id, self.body(r)) for r in requests]
        if self._batches is not None:
            datas = self._run(self._batches.run(items))
        else:
            datas = self._run(self._gather(items))
        results = []
        for data in datas:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
            input_tokens, output_tokens = _token_count(usage.get("prompt_tokens")), _token_count(usage.get("completion_tokens"))
            results.append(GenResult(
                text=str(text).strip(), finish_reason=choice.get("finish_reason"),
                output_tokens=output_tokens, input_tokens=input_tokens,
                # No usage: left unknown here; the harness estimates it.
                usage_source="api" if input_tokens is not None or output_tokens is not None else None,
            ))
            self._count("items")
            self._count("input_tokens", amount=input_tokens or 0)
            self._count("output_tokens", amount=output_tokens or 0)
        return results

    def bind_run_dir(self, path) -> None:
        """With batch=true, the run folder keeps the ids of submitted batches (`openai_batch.RECORDS_FILE`)."""
        if self._batches is not None:
            self._batches.bind(path)

    def choice_probs(self, requests: Sequence[GenRequest], choices: Sequence[str]) -> list[dict[str, float]] | None:
        if not self.logprobs:
            return None
        if not requests:
            return []
        datas = self._run(self._gather([(r.id, self.body(r, probe=True)) for r in requests]))
        out = []
        for data in datas:
            top = _first_top_logprobs(data["choices"][0])
            if top is None:
                if not self._warned_no_logprobs:
                    logger.warning("openai: %s returned no logprobs; probabilities unavailable", self.base_url)
                    self._warned_no_logprobs = True
                return None
            mass = {c: 0.0 for c in choices}
            for token, logprob in top:
                stripped = token.strip()
                if stripped in mass:
                    mass[stripped] += math.exp(logprob)
            total = sum(mass.values())
            out.append({c: (m / total if total > 0 else 1.0 / len(choices)) for c, m in mass.items()})
            self._count("items")
        return out


def _token_count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _close_at_exit(ref) -> None:
    generator = ref()
    if generator is not None:
        generator.close()


def _first_top_logprobs(choice: dict[str, Any]) -> list[tuple[str, float]] | None:
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    first = content[0]
    candidates = first.get("top_logprobs") or [first]
    out = []
    for entry in candidates:
        if isinstance(entry, dict) and isinstance(entry.get("token"), str) and isinstance(entry.get("logprob"), (int, float)):
            out.append((entry["token"], float(entry["logprob"])))
    return out or None


@hookimpl
def register_generators(register):
    register("openai", OpenAIGenerator, aliases=["openai-compatible"],
             description="any OpenAI-compatible chat API (async, bounded concurrency, retries)")
