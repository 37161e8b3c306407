"""An OpenAI-compatible HTTP server (aiohttp) over any persona_eval generator.

This is what ``persona-eval serve-openai`` runs (`run_server` with a `GeneratorResponder`).
It holds the protocol and nothing test-specific; the tests' fault injection, scripted
responders and child-process server live in ``tests/openai_server_support.py`` and plug in
through the two extension points below.

Endpoints: ``POST /v1/chat/completions`` (non-streaming, n=1), ``GET /v1/models``, and the
Batch API: ``POST /v1/files`` (multipart upload: ``purpose``, ``file``), ``GET /v1/files/{id}``
and ``/v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches`` and
``/v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. Errors have OpenAI's body shape
``{"error": {"message", "type", "param", "code"}}``. Every completion carries ``usage``; where the
responder gives no counts, tokens are counted as whitespace-separated words (the prompt's over
all message contents, the completion's over the reply text): deterministic, not a tokenizer.

Batches (`BatchJob`) live in memory: a created batch is validated (each input line
``{"custom_id", "method": "POST", "url": ENDPOINT, "body"}``, custom ids unique), then answered
in the background by the same responder as chat completions, and its output and error files
are written in OpenAI's line format (``{"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error"}``; unexecuted requests have ``response: null`` and an error code
such as ``batch_expired``). A `BatchPolicy` (``batch_policy=``) decides when a batch moves on
and what becomes of each request; the default runs it at once and completes it.

Extension points:

- a *responder* (`Responder`): any object with ``async respond(chat: ChatRequest) -> ChatReply``
  (and optionally ``async aclose()``, awaited when the server stops). It may raise
  ``APIError(status, message)`` to answer with an error. `GeneratorResponder` is the one
  shipped here: it serves a `Generator`, gathering concurrent requests into batches of up to
  ``max_batch``. System messages become `GenRequest.system`, the one user message the
  prompt, and a trailing assistant message the `response_prefix` that the reply continues.
  ``logprobs``/``top_logprobs`` are answered from the generator's `choice_probs` over
  ``logprob_choices`` (default A and B, renormalized), so a judge reading P(A) over HTTP sees
  what it would see in-process.
- a *middleware* (`Middleware`): ``async middleware(call: ChatCall, answer) -> web.StreamResponse``
  wraps every chat completion that passed parsing, auth and the model check. It may return
  ``await answer(call)`` (the responder's normal answer), or any response of its own, or
  break the connection; that is how the tests inject faults. ``stats=`` takes a `ServerStats`
  (or subclass) so such a layer can count what it did next to the server's own counters.

`OpenAIServer(responder, **options)` runs on its own event-loop thread (``start()``/``close()``
or a context manager); `run_server(responder, **options)` serves in the foreground until
Ctrl-C/SIGTERM. Options: ``host`` (127.0.0.1), ``port`` (0 = a free port), ``models`` (served
names; None accepts any name), ``api_key`` (when set, any other bearer token gets a 401 whose
message echoes the presented key, as some real servers do, so clients must redact it),
``max_body_mb`` (also the largest file upload), ``middleware``, ``stats``, ``batch_policy``,
``batch_concurrency`` (requests of one batch answered at once, default 64).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

logger = logging.getLogger(__name__)


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


def error_response(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                   headers: Mapping[str, str] | None = None):
    """An OpenAI-style error (``{"error": {...}}``) as an aiohttp response."""
    from aiohttp import web

    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=dict(headers or {}))


# -- responders -----------------------------------------------------------------------------


class Responder(Protocol):
    """What the server asks for an answer; ``async aclose()``, when present, is awaited at shutdown."""

    async def respond(self, chat: ChatRequest) -> ChatReply: ...


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


def as_responder(responder: Any) -> Responder:
    """A `Responder` as is; a generator spec (``"hf:embedded"``) as a `GeneratorResponder`."""
    if hasattr(responder, "respond"):
        return responder
    if isinstance(responder, str):
        return GeneratorResponder(responder)
    raise TypeError(f"not a responder: {responder!r} (need .respond(chat) or a generator spec)")


# -- the extension point around chat completions --------------------------------------------


@dataclass
class ChatCall:
    """One chat completion on its way to the responder: what a `Middleware` sees."""

    request: Any  # aiohttp.web.Request: headers, transport (a middleware may drop the connection)
    chat: ChatRequest
    server: "OpenAIServer"


#: ``answer(call)``: the server's normal answer (the responder's reply, or its `APIError`).
Answer = Callable[[ChatCall], Awaitable[Any]]
#: ``middleware(call, answer)``: returns ``await answer(call)`` or a response of its own.
Middleware = Callable[[ChatCall, Answer], Awaitable[Any]]


# -- statistics -----------------------------------------------------------------------------


class ServerStats:
    """Counters, updated on the server's event loop; `snapshot()` reads them consistently.

    ``keep_bodies`` recent chat request bodies are kept in ``bodies`` (none by default: a
    serving process has no use for its clients' prompts; tests pass a size to inspect them).
    Subclasses add counters of their own and extend `snapshot()`.
    """

    def __init__(self, keep_bodies: int = 0):
        self._lock = threading.Lock()
        self.requests = 0          # every HTTP request
        self.completions = 0       # chat completion requests received
        self.served = 0            # answered normally with 200
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: deque[dict[str, Any]] = deque(maxlen=keep_bodies)  # recent chat request bodies
        self.files = 0             # files uploaded
        self.batches = 0           # batches created (validated or not)
        self.batch_requests = 0    # input lines of the batches that passed validation
        self.batch_polls = 0       # retrievals of a batch's status

    def count(self, **changes: int) -> None:
        """Add to the named counters (``requests=1, in_flight=-1``...) and track the in-flight peak."""
        with self._lock:
            for name, delta in changes.items():
                setattr(self, name, getattr(self, name) + delta)
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def status(self, status: int) -> None:
        with self._lock:
            self.statuses[status] += 1

    def record_body(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.bodies.append(body)

    def record_batch(self, job: "BatchJob") -> None:
        """Called once per batch that passed validation; subclasses may count its custom ids."""

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests, "completions": self.completions, "served": self.served,
                "statuses": dict(self.statuses), "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                "files": self.files, "batches": self.batches, "batch_requests": self.batch_requests,
                "batch_polls": self.batch_polls,
            }

    def reset_peak(self) -> None:
        with self._lock:
            self.max_in_flight = self.in_flight


# -- the Batch API --------------------------------------------------------------------------

#: Endpoints a batch may target here (this server answers chat completions only).
BATCH_ENDPOINTS = ("/v1/chat/completions",)
BATCH_WINDOWS = ("24h",)  # as OpenAI: the only completion window there is
BATCH_TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


@dataclass
class BatchJob:
    """One batch: its input lines, where it stands, and the output and error lines so far."""

    id: str
    number: int  # creation order on this server, from 0 (a policy may treat the first batches differently)
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None
    lines: list[dict[str, Any]]
    created_at: int
    status: str = "validating"
    polls: int = 0
    errors: list[dict[str, Any]] | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error_lines: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, int] = field(default_factory=dict)

    @property
    def custom_ids(self) -> list[str]:
        return [line["custom_id"] for line in self.lines]

    def set_status(self, status: str) -> None:
        self.status = status
        self.times[f"{status}_at"] = int(time.time())

    def to_json(self) -> dict[str, Any]:
        failed = len(self.error_lines)
        body: dict[str, Any] = {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "input_file_id": self.input_file_id,
            "completion_window": self.completion_window, "status": self.status,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "created_at": self.created_at, "expires_at": self.created_at + 24 * 3600,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "request_counts": {"total": len(self.lines), "completed": len(self.outputs), "failed": failed},
            "metadata": self.metadata,
        }
        for name in ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
                     "cancelled_at"):
            body[name] = self.times.get(name)
        return body


class BatchPolicy:
    """When a batch moves on and what becomes of each of its requests; this default runs it at once.

    The tests' policies (``tests/openai_server_support.py``) hold batches in progress for a
    number of polls or until released, expire them, or fail some requests.
    """

    async def advance(self, job: BatchJob, status: str) -> None:
        """Awaited before `job` enters `status` (``in_progress``, then ``finalizing``)."""

    def validate(self, job: BatchJob) -> str | None:
        """A reason to fail the whole batch at validation, or None."""
        return None

    def outcome(self, job: BatchJob, line: dict[str, Any]) -> str | int | None:
        """None: answer the request; ``"expired"``: leave it unexecuted (the batch then ends
        expired); an HTTP status: answer it with that error."""
        return None

    def on_poll(self, job: BatchJob) -> None:
        """Called on every retrieval of `job`'s status."""


def _parse_batch_lines(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(input lines, validation errors) of an uploaded batch file, errors in OpenAI's shape."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            errors.append({"code": "invalid_json_line", "message": "this line is not valid JSON", "line": number})
            continue
        custom = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(custom, str) or not custom:
            errors.append({"code": "missing_required_parameter", "message": "custom_id is required", "line": number})
        elif custom in seen:
            errors.append({"code": "duplicate_custom_id", "message": f"custom_id {custom!r} is not unique",
                           "line": number})
        elif line.get("method") != "POST" or line.get("url") != endpoint:
            errors.append({"code": "invalid_url", "message": f"each line must POST to the batch's endpoint {endpoint}",
                           "line": number})
        elif not isinstance(line.get("body"), dict):
            errors.append({"code": "invalid_request", "message": "body must be a JSON object", "line": number})
        else:
            seen.add(custom)
            lines.append(line)
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "the input file has no requests", "line": None})
    return lines, errors


def _jsonl_bytes(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n" for record in records)


# -- the server -----------------------------------------------------------------------------

class OpenAIServer:
    """An aiohttp server on its own event-loop thread; use as a context manager or start()/close()."""

    def __init__(self, responder: Any, *, host: str = "127.0.0.1", port: int = 0, models: Sequence[str] | None = None,
                 api_key: str | None = None, max_body_mb: int = 64, middleware: Middleware | None = None,
                 stats: ServerStats | None = None, batch_policy: BatchPolicy | None = None, batch_concurrency: int = 64):
        self.responder = as_responder(responder)
        self.host = host
        self.port = int(port)
        self.models = list(models) if models else None
        self.api_key = api_key
        self.middleware = middleware
        self.stats = stats if stats is not None else ServerStats()
        self.max_body = int(max_body_mb) << 20
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._chat_index = 0
        self.batch_policy = batch_policy if batch_policy is not None else BatchPolicy()
        self.batch_concurrency = max(1, int(batch_concurrency))
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, BatchJob] = {}
        self._batch_tasks: dict[str, asyncio.Task] = {}

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
            raise RuntimeError("the OpenAI-compatible server did not start within 30 s")
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
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}", self._file_info)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self._get_batch)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._cancel_batch)
        # handler_cancellation: a hung handler ends when its client gives up.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        for task in list(self._batch_tasks.values()):
            task.cancel()
        if self._batch_tasks:
            await asyncio.gather(*self._batch_tasks.values(), return_exceptions=True)
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

    async def _models(self, request):
        from aiohttp import web

        self.stats.count(requests=1)
        error = self._check_auth(request)
        if error is not None:
            return error
        names = self.models or ["default"]
        self.stats.status(200)
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
        self.stats.status(401)
        return error_response(401, f"Incorrect API key provided: {presented or '(none)'}.", code="invalid_api_key")

    async def _chat(self, request):
        self.stats.count(requests=1, completions=1, in_flight=1)
        try:
            error = self._check_auth(request)
            if error is not None:
                return error
            try:
                body = await request.json()
            except ValueError:
                self.stats.status(400)
                return error_response(400, "request body is not valid JSON")
            try:
                chat = ChatRequest.parse(body, index=self._chat_index)
            except APIError as exc:
                self.stats.status(exc.status)
                return error_response(exc.status, exc.message, type=exc.type, code=exc.code)
            self._chat_index += 1
            self.stats.record_body(body)
            if self.models is not None and chat.model not in self.models:
                self.stats.status(404)
                return error_response(404, f"The model `{chat.model}` does not exist or you do not have access to it.",
                                      code="model_not_found")
            call = ChatCall(request=request, chat=chat, server=self)
            if self.middleware is not None:
                return await self.middleware(call, self.answer)
            return await self.answer(call)
        finally:
            self.stats.count(in_flight=-1)

    async def answer(self, call: ChatCall):
        """The normal answer to a chat completion: the responder's reply as a 200, or its `APIError`."""
        from aiohttp import web

        chat = call.chat
        try:
            reply = await self.responder.respond(chat)
        except APIError as exc:
            self.stats.status(exc.status)
            return error_response(exc.status, exc.message, type=exc.type, code=exc.code, headers=exc.headers)
        self.stats.count(served=1)
        self.stats.status(200)
        return web.json_response(completion_body(chat, reply))


    # -- the Batch API --

    def _error(self, status: int, message: str, **kwargs: Any):
        self.stats.status(status)
        return error_response(status, message, **kwargs)

    def _ok(self, body: dict[str, Any]):
        from aiohttp import web

        self.stats.status(200)
        return web.json_response(body)

    async def _upload(self, request):
        self.stats.count(requests=1)
        error = self._check_auth(request)
        if error is not None:
            return error
        try:
            form = await request.post()
        except ValueError as exc:  # not multipart, or over the size limit
            return self._error(400, f"expected a multipart upload with 'purpose' and 'file': {exc}")
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(purpose, str) or not purpose:
            return self._error(400, "'purpose' is required", param="purpose")
        if upload is None or not hasattr(upload, "file"):
            return self._error(400, "'file' is required (a file part)", param="file")
        stored = StoredFile(id=f"file-{uuid.uuid4().hex[:24]}", filename=upload.filename or "upload.jsonl",
                            purpose=purpose, data=upload.file.read(), created_at=int(time.time()))
        self.files[stored.id] = stored
        self.stats.count(files=1)
        return self._ok(stored.info())

    def _stored(self, request) -> StoredFile | None:
        return self.files.get(request.match_info["file_id"])

    async def _file_info(self, request):
        self.stats.count(requests=1)
        error = self._check_auth(request)
        if error is not None:
            return error
        stored = self._stored(request)
        if stored is None:
            return self._error(404, f"No such File object: {request.match_info['file_id']}")
        return self._ok(stored.info())

    async def _file_content(self, request):
        from aiohttp import web

        self.stats.count(requests=1)
        error = self._check_auth(request)
        if error is not None:
            return error
        stored = self._stored(request)
        if stored is None:
            return self._error(404, f"No such File object: {request.match_info['file_id']}")
        self.stats.status(200)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _create_batch(self, request):
        self.stats.count(requests=1)
        error = self._check_auth(request)
        if error is not None:
            return error
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return self._error(400, "request body must be a JSON object")
        endpoint, window = body.get("endpoint"), body.get("completion_window")
        stored = self.files.get(body.get("input_file_id") or "")
        if stored is None:
            return self._error(400, f"input_file_id {body.get('input_file_id')!r} is not an uploaded file",
                               param="input_file_id")
        if stored.purpose != "batch":
            return self._error(400, "the input file must be uploaded with purpose 'batch'", param="input_file_id")
        if endpoint not in BATCH_ENDPOINTS:
            return self._error(400, f"endpoint must be one of {', '.join(BATCH_ENDPOINTS)}", param="endpoint")
        if window not in BATCH_WINDOWS:
            return self._error(400, f"completion_window must be one of {', '.join(BATCH_WINDOWS)}",
                               param="completion_window")
        metadata = body.get("metadata")
        lines, errors = _parse_batch_lines(stored.data, endpoint)
        job = BatchJob(id=f"batch_{uuid.uuid4().hex[:24]}", number=len(self.jobs), input_file_id=stored.id,
                       endpoint=endpoint, completion_window=window, metadata=metadata if isinstance(metadata, dict) else None,
                       lines=lines, created_at=int(time.time()))
        self.jobs[job.id] = job
        self.stats.count(batches=1)
        reason = None if errors else self.batch_policy.validate(job)
        if errors or reason:
            job.errors = errors or [{"code": "validation_failed", "message": reason, "line": None}]
            job.set_status("failed")
        else:
            self.stats.count(batch_requests=len(lines))
            self.stats.record_batch(job)
            task = asyncio.get_running_loop().create_task(self._run_batch(job))
            self._batch_tasks[job.id] = task
            task.add_done_callback(lambda _, key=job.id: self._batch_tasks.pop(key, None))
        return self._ok(job.to_json())

    async def _list_batches(self, request):
        self.stats.count(requests=1)
        error = self._check_auth(request)
        if error is not None:
            return error
        jobs = sorted(self.jobs.values(), key=lambda job: -job.number)
        return self._ok({"object": "list", "data": [job.to_json() for job in jobs], "has_more": False})

    async def _get_batch(self, request):
        self.stats.count(requests=1, batch_polls=1)
        error = self._check_auth(request)
        if error is not None:
            return error
        job = self.jobs.get(request.match_info["batch_id"])
        if job is None:
            return self._error(404, f"No such Batch object: {request.match_info['batch_id']}")
        job.polls += 1
        self.batch_policy.on_poll(job)
        return self._ok(job.to_json())

    async def _cancel_batch(self, request):
        self.stats.count(requests=1)
        error = self._check_auth(request)
        if error is not None:
            return error
        job = self.jobs.get(request.match_info["batch_id"])
        if job is None:
            return self._error(404, f"No such Batch object: {request.match_info['batch_id']}")
        if job.status not in BATCH_TERMINAL:
            job.set_status("cancelling")
            task = self._batch_tasks.get(job.id)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if job.status not in BATCH_TERMINAL:  # it may have finished while being cancelled
                self._finish_batch(job, "cancelled", "batch_cancelled", "the batch was cancelled before this request ran")
        return self._ok(job.to_json())

    async def _run_batch(self, job: BatchJob) -> None:
        policy = self.batch_policy
        try:
            await policy.advance(job, "in_progress")
            job.set_status("in_progress")
            gate = asyncio.Semaphore(self.batch_concurrency)
            expired = False

            async def one(line: dict[str, Any]) -> None:
                nonlocal expired
                outcome = policy.outcome(job, line)
                if outcome == "expired":
                    expired = True
                    return
                if isinstance(outcome, int):
                    status, body = outcome, {"error": {"message": f"request failed (HTTP {outcome})",
                                                       "type": "server_error" if outcome >= 500 else "invalid_request_error",
                                                       "param": None, "code": None}}
                else:
                    async with gate:
                        status, body = await self._batch_answer(line["body"])
                record = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"],
                          "response": {"status_code": status, "request_id": f"req_{uuid.uuid4().hex[:24]}", "body": body},
                          "error": None}
                (job.outputs if status == 200 else job.error_lines).append(record)

            await asyncio.gather(*(one(line) for line in job.lines))
            await policy.advance(job, "finalizing")
            job.set_status("finalizing")
            if expired:
                self._finish_batch(job, "expired", "batch_expired",
                                   "This request could not be executed before the completion window expired.")
            else:
                self._finish_batch(job, "completed", "batch_failed", "the request was not executed")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken batch fails, the server keeps serving
            logger.exception("batch %s failed", job.id)
            job.errors = [{"code": "server_error", "message": f"{type(exc).__name__}: {exc}", "line": None}]
            job.set_status("failed")

    def _finish_batch(self, job: BatchJob, status: str, code: str, message: str) -> None:
        """Write the output and error files (requests never answered get `code`) and enter `status`."""
        answered = {record["custom_id"] for record in job.outputs + job.error_lines}
        for line in job.lines:
            if line["custom_id"] not in answered:
                job.error_lines.append({"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"],
                                        "response": None, "error": {"code": code, "message": message}})
        now = int(time.time())
        for kind, records in (("output", job.outputs), ("error", job.error_lines)):
            if records:
                stored = StoredFile(id=f"file-{uuid.uuid4().hex[:24]}", filename=f"{job.id}_{kind}.jsonl",
                                    purpose="batch_output", data=_jsonl_bytes(records), created_at=now)
                self.files[stored.id] = stored
                setattr(job, f"{kind}_file_id", stored.id)
        job.set_status(status)

    async def _batch_answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, response body) of one batch request, answered as a chat completion would be."""
        def failure(status: int, message: str, type: str = "invalid_request_error", code: str | None = None):
            return status, {"error": {"message": message, "type": type, "param": None, "code": code}}

        try:
            chat = ChatRequest.parse(body, index=self._chat_index)
        except APIError as exc:
            return failure(exc.status, exc.message, exc.type, exc.code)
        self._chat_index += 1
        if self.models is not None and chat.model not in self.models:
            return failure(404, f"The model `{chat.model}` does not exist or you do not have access to it.",
                           code="model_not_found")
        try:
            reply = await self.responder.respond(chat)
        except APIError as exc:
            return failure(exc.status, exc.message, exc.type, exc.code)
        except Exception as exc:  # noqa: BLE001 - one failed request, as a chat completion would answer it
            logger.exception("batch request failed")
            return failure(500, f"responder failed: {type(exc).__name__}: {exc}", "server_error")
        return 200, completion_body(chat, reply)


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
