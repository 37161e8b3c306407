"""The tests' OpenAI-compatible server: the production server plus fault injection and scripted answers.

The HTTP protocol itself is `persona_eval.serving.openai_server` (what ``persona-eval
serve-openai`` runs); this module adds only what tests and benchmarks need, through that
module's two extension points (a responder, and a middleware around chat completions).

Usage::

    from openai_server_support import FaultPlan, FixedResponder, serve

    with serve(FixedResponder("Feedback. [RESULT] A", latency_ms=50), faults=FaultPlan(rate=0.2)) as server:
        server.base_url            # "http://127.0.0.1:PORT/v1"
        server.stats.snapshot()    # requests, completions, served, statuses, faults, max_in_flight, ...
        server.stats.bodies        # the last 2000 chat request bodies
        server.faults = FaultPlan(sequence=["429", None])   # may be swapped while running

Responders (anything with ``async respond(chat) -> ChatReply``):
  - `FixedResponder(text, latency_ms, top_logprobs)`: the same text after a fixed delay (throughput benchmarks);
  - `FunctionResponder(f)`: ``f(ChatRequest) -> str | ChatReply``, sync (run in a thread) or async;
    `serve` wraps a bare callable in one;
  - a generator spec string or `GeneratorResponder` (production's), for end-to-end tests.
A responder may raise `APIError(status, message)` to answer with an error.

`serve(responder, **options)` / `LoopbackServer(responder, **options)`: `OpenAIServer`'s options
(``host``, ``port``, ``models``, ``api_key``...) plus ``faults`` (a `FaultPlan`) and
``keep_bodies``. `ChildServer(factory, *args, **options)` runs ``serve(factory(*args), **options)``
in a spawned child process (its own GIL), for benchmarks.

Fault injection: every chat completion request, after parsing, auth and the model check,
asks ``server.faults.pick(ctx)`` for a fault kind (None = answer normally). Built-in kinds
(`FAULT_KINDS`): "429" (with Retry-After), "500", "503", "malformed" (200, body not JSON),
"empty" (200 with ``choices: []``), "truncated" (Content-Length larger than the bytes sent,
then the connection closes), "hang" (no answer for ``hang_s`` seconds), "reset" (connection
closed without a response). Add kinds with ``register_fault(name, handler)`` where
``async handler(ctx: FaultContext) -> web.StreamResponse``. `FaultPlan` chooses by, in
order: ``decide(ctx)`` if given, ``sequence`` (forced kinds for the first requests this plan
sees, in arrival order), ``first_attempts`` (each distinct request body fails its first N arrivals: exact,
order-independent retry counts), then ``rate`` (random, seeded). Every request and every
injected fault is counted in the server's `FaultStats`.

Batches: ``serve(..., batch_policy=ScriptedBatches(...))`` controls the production server's Batch
API lifecycle: a batch stays ``validating`` for ``start_after_polls`` polls and ``in_progress``
for ``finish_after_polls`` more (or ``start_after_s``/``finish_after_s`` seconds), or until
``release()`` when created with ``held=True``; ``expire(job, custom_id)`` and
``fail(job, custom_id) -> status`` pick requests that expire unexecuted or fail;
``reject(job) -> reason`` fails a batch at validation. `FaultStats.batch_submissions` counts
every custom id submitted in a validated batch, so a test can prove nothing was paid for twice.

Rate limits: ``serve(..., rate_limit=RateLimit(requests_per_s=N, burst=B))`` puts a token bucket
in front of chat completions (batches are exempt, as with OpenAI): above it, 429 with
``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``; every answer carries
``x-ratelimit-limit-requests`` (the bucket's size), ``x-ratelimit-remaining-requests`` and
``x-ratelimit-reset-requests`` (time until the bucket is full again, formatted as OpenAI does:
``"12ms"``, ``"1.5s"``, ``"6m0s"``), and the ``-tokens`` three when ``tokens_per_s`` is set (a
request costs its prompt's whitespace words plus its max tokens). ``headers=False``: 429s only.

Imported by tests (``tests/`` is on ``sys.path`` under pytest) and by ``bench/`` scripts,
which put ``tests/`` on ``sys.path`` themselves. aiohttp is imported only inside functions,
like the production module, so importing this stays cheap.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence

from persona_eval.serving.openai_server import (
    Answer,
    BatchJob,
    BatchPolicy,
    ChatCall,
    ChatReply,
    ChatRequest,
    OpenAIServer,
    ServerStats,
    completion_body,
    error_response,
)
from persona_eval.serving.openai_server import as_responder as _production_responder

DEFAULT_FAULTS = ("429", "500", "503", "malformed", "empty", "truncated", "hang")


# -- scripted responders --------------------------------------------------------------------


class FixedResponder:
    """Answers every request with ``text`` after ``latency_ms``; optional first-token logprobs."""

    def __init__(self, text: str = "The responses differ. [RESULT] A", latency_ms: float = 0.0,
                 top_logprobs: Mapping[str, float] | None = None):
        self.text = text
        self.latency_s = float(latency_ms) / 1000.0
        self.top_logprobs = dict(top_logprobs) if top_logprobs else None

    async def respond(self, chat: ChatRequest) -> ChatReply:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        top = list(self.top_logprobs.items()) if self.top_logprobs else None
        return ChatReply(text=self.text, top_logprobs=top)


class FunctionResponder:
    """Wraps ``f(ChatRequest) -> str | ChatReply``, sync (run in a thread) or async."""

    def __init__(self, function: Callable[[ChatRequest], Any]):
        self.function = function

    async def respond(self, chat: ChatRequest) -> ChatReply:
        if inspect.iscoroutinefunction(self.function):
            result = await self.function(chat)
        else:
            result = await asyncio.get_running_loop().run_in_executor(None, self.function, chat)
        if inspect.isawaitable(result):
            result = await result
        return result if isinstance(result, ChatReply) else ChatReply(text=str(result))


def as_responder(responder: Any) -> Any:
    """Production's `as_responder`, plus bare callables (wrapped in a `FunctionResponder`)."""
    if not hasattr(responder, "respond") and not isinstance(responder, str) and callable(responder):
        return FunctionResponder(responder)
    return _production_responder(responder)


# -- faults ---------------------------------------------------------------------------------


@dataclass
class FaultContext:
    """What a fault handler sees."""

    request: Any  # aiohttp.web.Request
    chat: ChatRequest
    plan: "FaultPlan"
    server: "LoopbackServer"
    kind: str = ""


FaultHandler = Callable[[FaultContext], Awaitable[Any]]
FAULT_HANDLERS: dict[str, FaultHandler] = {}


def register_fault(name: str, handler: FaultHandler) -> None:
    """Add (or replace) a fault kind: ``async handler(ctx) -> aiohttp.web.StreamResponse``."""
    FAULT_HANDLERS[name] = handler


def _retry_after_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


async def _fault_429(ctx: FaultContext):
    return error_response(429, "Rate limit reached; please retry after the indicated time.", type="requests",
                          code="rate_limit_exceeded", headers={"Retry-After": _retry_after_text(ctx.plan.retry_after)})


async def _fault_500(ctx: FaultContext):
    return error_response(500, "The server had an error while processing your request.", type="server_error")


async def _fault_503(ctx: FaultContext):
    return error_response(503, "The engine is currently overloaded, please try again later.", type="server_error")


async def _fault_malformed(ctx: FaultContext):
    from aiohttp import web

    return web.Response(status=200, text='{"id": "chatcmpl-broken", "choices": [{"index": 0, "mess',
                        content_type="application/json")


async def _fault_empty(ctx: FaultContext):
    from aiohttp import web

    body = completion_body(ctx.chat, ChatReply(text=""))
    body["choices"] = []
    return web.json_response(body)


async def _fault_truncated(ctx: FaultContext):
    from aiohttp import web

    payload = json.dumps(completion_body(ctx.chat, ChatReply(text="this body is cut short"))).encode()
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = len(payload)
    await response.prepare(ctx.request)
    await response.write(payload[: len(payload) // 2])
    _drop_connection(ctx.request)
    return response


async def _fault_hang(ctx: FaultContext):
    await asyncio.sleep(ctx.plan.hang_s)
    return error_response(504, "hung on purpose", type="server_error")


async def _fault_reset(ctx: FaultContext):
    from aiohttp import web

    _drop_connection(ctx.request)
    return web.Response(status=500)


def _drop_connection(request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


for _name, _handler in (("429", _fault_429), ("500", _fault_500), ("503", _fault_503), ("malformed", _fault_malformed),
                        ("empty", _fault_empty), ("truncated", _fault_truncated), ("hang", _fault_hang),
                        ("reset", _fault_reset)):
    register_fault(_name, _handler)
FAULT_KINDS = tuple(FAULT_HANDLERS)


@dataclass
class FaultPlan:
    """Which chat requests get which fault (see the module docstring for the order of rules)."""

    rate: float = 0.0
    kinds: Sequence[str] | Mapping[str, float] = DEFAULT_FAULTS
    seed: int = 0
    sequence: Sequence[str | None] = ()
    first_attempts: int = 0
    retry_after: float = 0.1
    hang_s: float = 30.0
    decide: Callable[[FaultContext], str | None] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.rate) <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {self.rate}")
        weights = dict(self.kinds) if isinstance(self.kinds, Mapping) else {k: 1.0 for k in self.kinds}
        named = set(weights) | {k for k in self.sequence if k is not None}
        unknown = sorted(named - set(FAULT_HANDLERS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {sorted(FAULT_HANDLERS)}")
        self._names = list(weights)
        self._weights = [float(w) for w in weights.values()]
        self._rng = random.Random(self.seed)
        self._seen: Counter[str] = Counter()
        self._picks = 0  # requests this plan has seen; `sequence` indexes them

    def _choose(self) -> str | None:
        if not self._names:
            return None
        return self._rng.choices(self._names, weights=self._weights, k=1)[0]

    def pick(self, ctx: FaultContext) -> str | None:
        if self.decide is not None:
            return self.decide(ctx)
        chat = ctx.chat
        index, self._picks = self._picks, self._picks + 1
        if index < len(self.sequence):
            return self.sequence[index]
        if self.first_attempts > 0:
            key = json.dumps(chat.body, sort_keys=True)
            self._seen[key] += 1
            if self._seen[key] <= self.first_attempts:
                return self._choose()
        if self.rate > 0 and self._rng.random() < self.rate:
            return self._choose()
        return None


# -- the server with faults -----------------------------------------------------------------


class FaultStats(ServerStats):
    """`ServerStats` plus the faults injected, by kind (``snapshot()["faults"]``), the 429s of the
    rate limit (``rate_limited``) and how often each custom id was submitted in a batch."""

    def __init__(self, keep_bodies: int = 2000):
        super().__init__(keep_bodies=keep_bodies)
        self.faults: Counter[str] = Counter()
        self.rate_limited = 0
        self.batch_submissions: Counter[str] = Counter()

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def record_batch(self, job: BatchJob) -> None:
        with self._lock:
            self.batch_submissions.update(job.custom_ids)

    def snapshot(self) -> dict[str, Any]:
        snapshot = super().snapshot()
        with self._lock:
            snapshot["faults"] = dict(self.faults)
            snapshot["rate_limited"] = self.rate_limited
            snapshot["batch_submissions"] = dict(self.batch_submissions)
        return snapshot


# -- batches with a scripted lifecycle -------------------------------------------------------


@dataclass
class ScriptedBatches(BatchPolicy):
    """A batch lifecycle for tests (see the module docstring)."""

    start_after_polls: int = 0
    finish_after_polls: int = 0
    start_after_s: float = 0.0
    finish_after_s: float = 0.0
    held: bool = False
    expire: Callable[[BatchJob, str], bool] | None = None
    fail: Callable[[BatchJob, str], int | None] | None = None
    reject: Callable[[BatchJob], str | None] | None = None
    _released: threading.Event = field(default_factory=threading.Event, repr=False)
    _created: dict[str, float] = field(default_factory=dict, repr=False)

    def release(self) -> None:
        """Let held batches go on (from any thread)."""
        self._released.set()

    async def advance(self, job: BatchJob, status: str) -> None:
        polls = self.start_after_polls + (self.finish_after_polls if status == "finalizing" else 0)
        seconds = self.start_after_s + (self.finish_after_s if status == "finalizing" else 0.0)
        created = self._created.setdefault(job.id, time.monotonic())  # the first call comes right after creation
        while (job.polls < polls or time.monotonic() - created < seconds
               or (self.held and not self._released.is_set())):
            await asyncio.sleep(0.005)

    def validate(self, job: BatchJob) -> str | None:
        return self.reject(job) if self.reject is not None else None

    def outcome(self, job: BatchJob, line: dict[str, Any]) -> str | int | None:
        custom = line["custom_id"]
        if self.expire is not None and self.expire(job, custom):
            return "expired"
        if self.fail is not None:
            return self.fail(job, custom)
        return None


# -- rate limits ----------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """A duration as OpenAI's rate-limit headers write it: ``"12ms"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m3s"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 1.0:
        return f"{int(math.ceil(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600.0)
    minutes, rest = divmod(rest, 60.0)
    secs = f"{round(rest, 3):g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{secs}"
    if minutes:
        return f"{int(minutes)}m{secs}"
    return secs


@dataclass
class RateLimit:
    """A token bucket of `requests_per_s` (size `burst`, default a tenth of a second's worth, at least 1),
    and optionally of `tokens_per_s` (size `token_burst`, default one second's worth)."""

    requests_per_s: float
    burst: float | None = None
    tokens_per_s: float | None = None
    token_burst: float | None = None
    headers: bool = True


class _Bucket:
    def __init__(self, rate: float, size: float):
        self.rate, self.size = float(rate), float(size)
        self.level, self.stamp = float(size), time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.size, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, cost: float) -> float:
        return max(0.0, (cost - self.level) / self.rate)

    def headers(self, name: str) -> dict[str, str]:
        return {f"x-ratelimit-limit-{name}": str(int(self.size)),
                f"x-ratelimit-remaining-{name}": str(max(0, int(math.floor(self.level)))),
                f"x-ratelimit-reset-{name}": format_duration((self.size - self.level) / self.rate)}


class _Limiter:
    """The server side of a `RateLimit` (used on the server's event loop only)."""

    def __init__(self, limit: RateLimit):
        self.limit = limit
        self.requests = _Bucket(limit.requests_per_s, limit.burst or max(1.0, limit.requests_per_s / 10.0))
        self.tokens = None
        if limit.tokens_per_s:
            self.tokens = _Bucket(limit.tokens_per_s, limit.token_burst or limit.tokens_per_s)

    @staticmethod
    def cost(chat: ChatRequest) -> float:
        return float(sum(len(m["content"].split()) for m in chat.messages) + (chat.max_tokens or 0))

    def admit(self, chat: ChatRequest) -> tuple[bool, dict[str, str]]:
        """(admitted, headers for the answer); an admitted request takes its share of the buckets."""
        now = time.monotonic()
        cost = self.cost(chat)
        buckets = [(self.requests, 1.0, "requests")] + ([(self.tokens, cost, "tokens")] if self.tokens else [])
        for bucket, _, _ in buckets:
            bucket.refill(now)
        wait = max(bucket.wait(amount) for bucket, amount, _ in buckets)
        if wait <= 0:
            for bucket, amount, _ in buckets:
                bucket.level -= amount
        headers: dict[str, str] = {}
        if self.limit.headers:
            for bucket, _, name in buckets:
                headers.update(bucket.headers(name))
        if wait > 0:
            headers["retry-after"] = str(max(1, int(math.ceil(wait))))
            headers["retry-after-ms"] = str(max(1, int(math.ceil(wait * 1000))))
        return wait <= 0, headers


class LoopbackServer(OpenAIServer):
    """`OpenAIServer` whose chat completions pass through ``self.faults`` (a `FaultPlan`, swappable while running)."""

    def __init__(self, responder: Any, *, faults: FaultPlan | None = None, keep_bodies: int = 2000,
                 rate_limit: RateLimit | None = None, **options: Any):
        self.faults = faults or FaultPlan()
        self.rate_limit = _Limiter(rate_limit) if rate_limit is not None else None
        super().__init__(as_responder(responder), middleware=self._inject_fault, stats=FaultStats(keep_bodies),
                         **options)

    async def _inject_fault(self, call: ChatCall, answer: Answer):
        headers: dict[str, str] = {}
        if self.rate_limit is not None:
            admitted, headers = self.rate_limit.admit(call.chat)
            if not admitted:
                with self.stats._lock:
                    self.stats.rate_limited += 1
                self.stats.status(429)
                return error_response(429, "Rate limit reached for requests; please try again later.",
                                      type="requests", code="rate_limit_exceeded", headers=headers)
        response = await self._faulty_answer(call, answer)
        if headers and not getattr(response, "prepared", True):
            response.headers.update(headers)
        return response

    async def _faulty_answer(self, call: ChatCall, answer: Answer):
        plan = self.faults  # read once: a swap mid-request must not mix two plans
        ctx = FaultContext(request=call.request, chat=call.chat, plan=plan, server=self)
        kind = plan.pick(ctx)
        if kind is None:
            return await answer(call)
        handler = FAULT_HANDLERS.get(kind)
        if handler is None:
            raise RuntimeError(f"fault plan chose unknown kind {kind!r}")
        ctx.kind = kind
        self.stats.fault(kind)
        return await handler(ctx)


def serve(responder: Any, **options: Any) -> LoopbackServer:
    """Start a server on loopback (port 0 = a free one); use it as a context manager."""
    options.setdefault("host", "127.0.0.1")
    return LoopbackServer(responder, **options).start()


# -- the server in a child process (benchmarks) ---------------------------------------------


def _child_main(factory: Callable[..., Any], args: tuple, options: dict[str, Any], conn) -> None:
    with serve(factory(*args), **options) as server:
        conn.send(server.base_url)
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(server.stats.snapshot())
            elif command == "stop":
                break


class ChildServer:
    """``serve(factory(*args), **options)`` in a spawned child process, with its own GIL.

    For benchmarks, where a server sharing the client's GIL would measure the two together.
    `factory` must be importable by name in the child (a module-level function): the child
    imports it, and this module, by name, and spawn hands it the parent's ``sys.path``, so
    ``tests/`` on the parent's path (pytest's, or a bench script's own insert) is enough.
    ``stats()`` asks the child for its `FaultStats` snapshot.
    """

    def __init__(self, factory: Callable[..., Any], *args: Any, ready_timeout_s: float = 60.0, **options: Any):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_child_main, args=(factory, args, options, child), daemon=True)
        self.process.start()
        child.close()
        try:
            if not self._conn.poll(ready_timeout_s):
                raise RuntimeError(f"the server process did not start within {ready_timeout_s:g}s")
            self.base_url: str = self._conn.recv()
        except (EOFError, RuntimeError) as exc:
            self.close()
            raise RuntimeError(f"the server process failed to start (exit code {self.process.exitcode})") from exc

    def stats(self) -> dict[str, Any]:
        self._conn.send("stats")
        return self._conn.recv()

    def close(self) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)

    def __enter__(self) -> "ChildServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
