"""A real OpenAI-compatible HTTP server (aiohttp) for loopback tests, benchmarks and serving.

Usage::

    from persona_eval.serving.openai_server import FaultPlan, FixedResponder, serve

    with serve(FixedResponder("Feedback. [RESULT] A", latency_ms=50), faults=FaultPlan(rate=0.2)) as server:
        server.base_url            # "http://127.0.0.1:PORT/v1"
        server.stats.snapshot()    # requests, completions, served, statuses, faults, max_in_flight, ...
        server.faults = FaultPlan(sequence=["429", None])   # may be swapped while running

Endpoints: ``POST /v1/chat/completions`` (non-streaming, n=1) and ``GET /v1/models``.
Errors have OpenAI's body shape ``{"error": {"message", "type", "code"}}``.

Responders turn a parsed `ChatRequest` into a `ChatReply` (``async respond(chat)``):
  - `FixedResponder(text, latency_ms)`: the same text after a fixed delay (throughput benchmarks);
  - `GeneratorResponder(generator_or_spec)`: any persona_eval Generator (``hf:embedded``...),
    concurrent requests gathered into batches of up to ``max_batch``. System messages become
    `GenRequest.system`, the one user message the prompt, and a trailing assistant message the
    `response_prefix` that the reply continues. ``logprobs``/``top_logprobs`` are answered from
    the generator's `choice_probs` over ``logprob_choices`` (default A and B, renormalized), so
    a judge reading P(A) over HTTP sees what it would see in-process;
  - any callable ``f(ChatRequest) -> str | ChatReply`` (sync or async).
A responder may raise `APIError(status, message)` to answer with an error.

`ChildServer(factory, *args, **options)` runs ``serve(factory(*args), **options)`` in a
spawned child process (its own GIL), for benchmarks.

`serve(responder, **options)` / `OpenAIServer(responder, **options)` options: ``host``
(127.0.0.1), ``port`` (0 = a free port), ``models`` (served names; None accepts any name),
``api_key`` (when set, any other bearer token gets a 401 whose message echoes the presented
key, as some real servers do, so client-side redaction can be tested), ``faults`` (a
`FaultPlan`). `run_server(...)` serves in the foreground (``persona-eval serve-openai``).

Fault injection: every chat completion request, after parsing, auth and the model check,
asks ``server.faults.pick(chat)`` for a fault kind (None = answer normally). Built-in kinds
(`FAULT_KINDS`): "429" (with Retry-After), "500", "503", "malformed" (200, body not JSON),
"empty" (200 with ``choices: []``), "truncated" (Content-Length larger than the bytes sent,
then the connection closes), "hang" (no answer for ``hang_s`` seconds), "reset" (connection
closed without a response). Add kinds with ``register_fault(name, handler)`` where
``async handler(ctx: FaultContext) -> web.StreamResponse``. `FaultPlan` chooses by, in
order: ``decide(ctx)`` if given, ``sequence`` (forced kinds for the first requests this plan
sees, in arrival order), ``first_attempts`` (each distinct request body fails its first N arrivals: exact,
order-independent retry counts), then ``rate`` (random, seeded). Every request and every
injected fault is counted in `ServerStats`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import random
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence

logger = logging.getLogger("persona_eval.serving.openai_server")

DEFAULT_FAULTS = ("429", "500", "503", "malformed", "empty", "truncated", "hang")


class APIError(Exception):
    """Raised by a responder (or the server) to answer with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type, code
        self.headers = dict(headers or {})


# -- requests and replies -------------------------------------------------------------------


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise APIError(400, "only text content parts are supported")
        return "".join(parts)
    raise APIError(400, "message content must be a string or a list of text parts")


@dataclass
class ChatRequest:
    """A parsed ``/v1/chat/completions`` body."""

    model: str
    messages: list[dict[str, str]]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    body: dict[str, Any] = field(default_factory=dict, repr=False)
    index: int = 0  # arrival number among chat requests, from 0

    @classmethod
    def parse(cls, body: Any, index: int = 0) -> "ChatRequest":
        if not isinstance(body, dict):
            raise APIError(400, "request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "'model' is required")
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise APIError(400, "'messages' must be a non-empty list")
        messages = []
        for message in raw_messages:
            if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
                raise APIError(400, "each message needs a role of system, developer, user or assistant")
            role = "system" if message["role"] == "developer" else message["role"]
            messages.append({"role": role, "content": _content_text(message.get("content"))})
        if body.get("stream"):
            raise APIError(400, "stream=true is not supported by this server")
        if body.get("n", 1) != 1:
            raise APIError(400, "only n=1 is supported")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise APIError(400, "'max_tokens' must be a positive integer")
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        top_logprobs = body.get("top_logprobs") or 0
        if not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= 20:
            raise APIError(400, "'top_logprobs' must be an integer from 0 to 20")
        try:
            temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
            top_p = float(body.get("top_p", 1.0) if body.get("top_p") is not None else 1.0)
        except (TypeError, ValueError):
            raise APIError(400, "'temperature' and 'top_p' must be numbers") from None
        return cls(
            model=model, messages=messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
            seed=body.get("seed"), stop=stop, logprobs=bool(body.get("logprobs")), top_logprobs=top_logprobs,
            body=body, index=index,
        )

    def parts(self) -> tuple[str | None, str, str]:
        """(system, user prompt, response prefix) of a single-turn conversation."""
        system = [m["content"] for m in self.messages if m["role"] == "system"]
        rest = [m for m in self.messages if m["role"] != "system"]
        prefix = ""
        if rest and rest[-1]["role"] == "assistant":
            prefix = rest.pop()["content"]
        if len(rest) != 1 or rest[0]["role"] != "user":
            raise APIError(400, "this responder serves single-turn chats: system messages, one user message, "
                                "and optionally a final assistant message to continue")
        return ("\n\n".join(system) or None), rest[0]["content"], prefix

    def to_gen_request(self, request_id: str, default_max_tokens: int = 256):
        from persona_eval.contracts.records import GenParams, GenRequest

        system, prompt, prefix = self.parts()
        params = GenParams(
            max_new_tokens=self.max_tokens or default_max_tokens,
            temperature=self.temperature if self.body.get("temperature") is not None else 0.0,
            top_p=self.top_p, seed=int(self.seed or 0), stop=self.stop,
        )
        return GenRequest(id=request_id, prompt=prompt, params=params, system=system, response_prefix=prefix)


@dataclass
class ChatReply:
    text: str
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: (token, logprob) candidates at the first generated position, when the responder has them.
    top_logprobs: list[tuple[str, float]] | None = None


def completion_body(chat: ChatRequest, reply: ChatReply) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.text},
        "finish_reason": reply.finish_reason,
        "logprobs": None,
    }
    if chat.logprobs and reply.top_logprobs:
        ranked = sorted(reply.top_logprobs, key=lambda item: -item[1])
        token, logprob = ranked[0]

        def entry(tok: str, lp: float) -> dict[str, Any]:
            return {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}

        choice["logprobs"] = {"content": [
            {**entry(token, logprob), "top_logprobs": [entry(t, lp) for t, lp in ranked[: chat.top_logprobs]]}
        ]}
    prompt_tokens = reply.prompt_tokens
    if prompt_tokens is None:
        prompt_tokens = sum(len(m["content"].split()) for m in chat.messages)
    completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else len(reply.text.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


# -- responders -----------------------------------------------------------------------------


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


class GeneratorResponder:
    """Serves a persona_eval `Generator`; requests arriving together are generated as one batch.

    One worker thread runs the generator (models are not thread-safe); while it works, new
    requests queue up and form the next batch. ``batch_wait_ms`` is how long the first request
    of a batch waits for company.
    """

    def __init__(self, generator: Any, *, max_batch: int | None = None, batch_wait_ms: float = 5.0,
                 logprob_choices: Sequence[str] = ("A", "B"), default_max_tokens: int = 256):
        if isinstance(generator, str):
            from persona_eval.contracts.factories import build_generator

            generator = build_generator(generator)
        self.generator = generator
        self.max_batch = int(max_batch or max(1, getattr(generator, "preferred_batch_size", 8)))
        self.batch_wait_s = float(batch_wait_ms) / 1000.0
        self.logprob_choices = tuple(logprob_choices)
        self.default_max_tokens = int(default_max_tokens)
        self.batches: list[int] = []  # size of every batch handed to the generator
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = None
        self._counter = 0

    async def respond(self, chat: ChatRequest) -> ChatReply:
        self._counter += 1
        request = chat.to_gen_request(f"http-{self._counter}", self.default_max_tokens)
        if self._queue is None:
            from concurrent.futures import ThreadPoolExecutor

            self._queue = asyncio.Queue()
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persona-eval-serve")
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((chat, request, future))
        return await future

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.batch_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            live = [item for item in batch if not item[2].done()]  # a client that left needs nothing
            if not live:
                continue
            self.batches.append(len(live))
            try:
                replies = await loop.run_in_executor(self._executor, self._run_batch, live)
            except Exception as exc:  # noqa: BLE001 - reported to each waiting client as a 500
                logger.exception("generator failed on a batch of %d", len(live))
                error = APIError(500, f"generator failed: {type(exc).__name__}: {exc}", type="server_error")
                for _, _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, _, future), reply in zip(live, replies):
                if not future.done():
                    future.set_result(reply)

    def _run_batch(self, batch) -> list[ChatReply]:
        requests = [request for _, request, _ in batch]
        results = self.generator.generate(requests)
        probs: dict[int, dict[str, float]] = {}
        wanted = [i for i, (chat, _, _) in enumerate(batch) if chat.logprobs]
        if wanted and self.logprob_choices:
            found = self.generator.choice_probs([requests[i] for i in wanted], list(self.logprob_choices))
            if found is not None:
                probs = dict(zip(wanted, found))
        replies = []
        for i, result in enumerate(results):
            top = None
            if i in probs:
                top = [(choice, math.log(p) if p > 0 else -1e4) for choice, p in probs[i].items()]
            replies.append(ChatReply(
                text=result.text, finish_reason=result.finish_reason or "stop",
                completion_tokens=result.output_tokens, top_logprobs=top,
            ))
        return replies

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def as_responder(responder: Any) -> Any:
    if hasattr(responder, "respond"):
        return responder
    if isinstance(responder, str):
        return GeneratorResponder(responder)
    if callable(responder):
        return FunctionResponder(responder)
    raise TypeError(f"not a responder: {responder!r} (need .respond(chat), a callable or a generator spec)")


# -- faults ---------------------------------------------------------------------------------


@dataclass
class FaultContext:
    """What a fault handler sees."""

    request: Any  # aiohttp.web.Request
    chat: ChatRequest
    plan: "FaultPlan"
    server: "OpenAIServer"
    kind: str = ""


FaultHandler = Callable[[FaultContext], Awaitable[Any]]
FAULT_HANDLERS: dict[str, FaultHandler] = {}


def register_fault(name: str, handler: FaultHandler) -> None:
    """Add (or replace) a fault kind: ``async handler(ctx) -> aiohttp.web.StreamResponse``."""
    FAULT_HANDLERS[name] = handler


def _error_response(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                    headers: Mapping[str, str] | None = None):
    from aiohttp import web

    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=dict(headers or {}))


def _retry_after_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


async def _fault_429(ctx: FaultContext):
    return _error_response(429, "Rate limit reached; please retry after the indicated time.", type="requests",
                           code="rate_limit_exceeded", headers={"Retry-After": _retry_after_text(ctx.plan.retry_after)})


async def _fault_500(ctx: FaultContext):
    return _error_response(500, "The server had an error while processing your request.", type="server_error")


async def _fault_503(ctx: FaultContext):
    return _error_response(503, "The engine is currently overloaded, please try again later.", type="server_error")


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
    return _error_response(504, "hung on purpose", type="server_error")


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


# -- statistics -----------------------------------------------------------------------------


class ServerStats:
    """Counters, updated on the server's event loop; `snapshot()` reads them consistently."""

    def __init__(self, keep_bodies: int = 2000):
        self._lock = threading.Lock()
        self.requests = 0          # every HTTP request
        self.completions = 0       # chat completion requests received
        self.served = 0            # answered normally with 200
        self.statuses: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: deque[dict[str, Any]] = deque(maxlen=keep_bodies)  # recent chat request bodies

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests, "completions": self.completions, "served": self.served,
                "statuses": dict(self.statuses), "faults": dict(self.faults),
                "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
            }

    def reset_peak(self) -> None:
        with self._lock:
            self.max_in_flight = self.in_flight


# -- the server -----------------------------------------------------------------------------


class OpenAIServer:
    """An aiohttp server on its own event-loop thread; use as a context manager or start()/close()."""

    def __init__(self, responder: Any, *, host: str = "127.0.0.1", port: int = 0, models: Sequence[str] | None = None,
                 api_key: str | None = None, faults: FaultPlan | None = None, max_body_mb: int = 64):
        self.responder = as_responder(responder)
        self.host = host
        self.port = int(port)
        self.models = list(models) if models else None
        self.api_key = api_key
        self.faults = faults or FaultPlan()
        self.stats = ServerStats()
        self.max_body = int(max_body_mb) << 20
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._chat_index = 0

    # -- addresses --

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # -- life cycle --

    def start(self) -> "OpenAIServer":
        self._thread = threading.Thread(target=self._thread_main, name="persona-eval-openai-server", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._startup_error is not None:
            raise self._startup_error
        if not self._ready.is_set():
            raise RuntimeError("the OpenAI-compatible test server did not start within 30 s")
        return self

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that called start()
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._stop())
            loop.close()

    async def _start(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=self.max_body)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a hung handler ends when its client gives up.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        closer = getattr(self.responder, "aclose", None)
        if closer is not None:
            await closer()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)

    def __enter__(self) -> "OpenAIServer":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- handlers --

    def _count(self, **changes: int) -> None:
        with self.stats._lock:
            for name, delta in changes.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)

    def _status(self, status: int) -> None:
        with self.stats._lock:
            self.stats.statuses[status] += 1

    async def _models(self, request):
        from aiohttp import web

        self._count(requests=1)
        error = self._check_auth(request)
        if error is not None:
            return error
        names = self.models or ["default"]
        self._status(200)
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "persona-eval"} for name in names
        ]})

    def _check_auth(self, request):
        if self.api_key is None:
            return None
        header = request.headers.get("Authorization", "")
        presented = header[7:] if header.startswith("Bearer ") else header
        if presented == self.api_key:
            return None
        self._status(401)
        return _error_response(401, f"Incorrect API key provided: {presented or '(none)'}.", code="invalid_api_key")

    async def _chat(self, request):
        from aiohttp import web

        self._count(requests=1, completions=1, in_flight=1)
        try:
            error = self._check_auth(request)
            if error is not None:
                return error
            try:
                body = await request.json()
            except ValueError:
                self._status(400)
                return _error_response(400, "request body is not valid JSON")
            try:
                chat = ChatRequest.parse(body, index=self._chat_index)
            except APIError as exc:
                self._status(exc.status)
                return _error_response(exc.status, exc.message, type=exc.type, code=exc.code)
            self._chat_index += 1
            with self.stats._lock:
                self.stats.bodies.append(body)
            if self.models is not None and chat.model not in self.models:
                self._status(404)
                return _error_response(404, f"The model `{chat.model}` does not exist or you do not have access to it.",
                                       code="model_not_found")
            ctx = FaultContext(request=request, chat=chat, plan=self.faults, server=self)
            kind = self.faults.pick(ctx)
            if kind is not None:
                handler = FAULT_HANDLERS.get(kind)
                if handler is None:
                    raise RuntimeError(f"fault plan chose unknown kind {kind!r}")
                ctx.kind = kind
                with self.stats._lock:
                    self.stats.faults[kind] += 1
                return await handler(ctx)
            try:
                reply = await self.responder.respond(chat)
            except APIError as exc:
                self._status(exc.status)
                return _error_response(exc.status, exc.message, type=exc.type, code=exc.code, headers=exc.headers)
            self._count(served=1)
            self._status(200)
            return web.json_response(completion_body(chat, reply))
        finally:
            self._count(in_flight=-1)


def serve(responder: Any, **options: Any) -> OpenAIServer:
    """Start a server on loopback (port 0 = a free one); use it as a context manager."""
    options.setdefault("host", "127.0.0.1")
    return OpenAIServer(responder, **options).start()


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
    `factory` must be importable by name in the child (a module-level function). ``stats()``
    asks the child for its `ServerStats` snapshot.
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


def run_server(responder: Any, *, ready: Callable[[OpenAIServer], None] | None = None, **options: Any) -> None:
    """Serve in the foreground until interrupted (Ctrl-C or SIGTERM)."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, interrupt)
    server = OpenAIServer(responder, **options).start()
    try:
        if ready is not None:
            ready(server)
        while server._thread is not None and server._thread.is_alive():
            server._thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
