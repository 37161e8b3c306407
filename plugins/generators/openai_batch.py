"""The OpenAI Batch API path of the `openai` generator (``batch=true``).

`BatchClient.run(items)` answers ``(item id, request body)`` pairs through batch jobs instead of
one HTTP call each, at the Batch API's price:

1. every body gets ``custom_id = "pe-" + stable_hash(body)[:32]``, so a rerun maps the same
   requests to the same ids (identical bodies are sent once);
2. batches recorded in the run folder (`RECORDS_FILE`, see `bind`) whose custom ids cover some of
   the requests are re-attached, newest first: still running, they are polled; finished, their
   output is downloaded. Nothing they cover is submitted again;
3. the rest is written as JSONL (``{"custom_id", "method": "POST", "url", "body"}``), split to
   stay within `max_requests` lines and `max_bytes` per file (the API's 50,000 requests and
   200 MB), uploaded to ``/files`` (purpose ``batch``) and submitted to ``/batches`` with the
   endpoint the synchronous path would call. Each batch id is appended and fsynced to the
   records file as soon as it exists, so a run killed while it waits re-attaches instead of
   paying twice;
4. every batch is polled (``poll_s``, growing by half each poll up to ``poll_max_s``) until
   it is completed, failed, expired or cancelled; its output and error files are downloaded
   and matched by custom id. Status changes are logged at INFO and passed to the generator's
   ``progress_hook`` (a callable taking one line of text) where one is set;
5. requests a batch did not answer (expired, failed validation, cancelled, a retryable error
   such as 429/5xx) are sent again: as a new batch (``fallback="none"``) or through the
   synchronous endpoint (``fallback="sync"``), at most ``max_retries`` more times. An answer
   that cannot succeed on a retry (400, 401, 404) is the error the synchronous path raises.

Records are keyed by the generator's base URL and model; other backends' batches in the same
run folder are left alone.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import RunError, UsageError
from persona_eval.hashing import stable_hash
from persona_eval.lazy_import import LazyModule
from persona_eval.plugins.generators.common import server_message
from persona_eval.storage.jsonl import JsonlWriter, iter_jsonl

asyncio = LazyModule("asyncio")

logger = logging.getLogger(__name__)

BATCH_MAX_REQUESTS = 50_000           # the API's per-batch request cap
BATCH_MAX_BYTES = 200 * 1000 * 1000   # the API's per-file size cap (200 MB)
RECORDS_FILE = "openai_batches.jsonl"
TERMINAL = ("completed", "failed", "expired", "cancelled")
FALLBACKS = ("none", "sync")
RETRYABLE = {408, 409, 429}


def custom_id(body: dict[str, Any]) -> str:
    return "pe-" + stable_hash(body, 32)


def endpoint_of(body: dict[str, Any]) -> str:
    return "/v1/chat/completions" if "messages" in body else "/v1/completions"


class _Outcome:
    """What a batch said about one request: a response body, or why there is none."""

    __slots__ = ("body", "reason", "status", "raw")

    def __init__(self, body: dict[str, Any] | None = None, reason: str = "", status: int | None = None,
                 raw: bytes = b""):
        self.body, self.reason, self.status, self.raw = body, reason, status, raw


def _valid_body(body: Any) -> bool:
    choices = body.get("choices") if isinstance(body, dict) else None
    return isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict) \
        and isinstance(choices[0].get("message"), dict)


def _line_outcome(line: dict[str, Any]) -> _Outcome:
    response, error = line.get("response"), line.get("error")
    status = response.get("status_code") if isinstance(response, dict) else None
    if isinstance(status, int):
        body = response.get("body")
        if status == 200 and not error:
            return _Outcome(body=body) if _valid_body(body) else _Outcome(reason="malformed response body")
        raw = json.dumps(body).encode("utf-8")
        if status in RETRYABLE or status >= 500:
            return _Outcome(reason=f"HTTP {status}")
        return _Outcome(reason=f"HTTP {status}", status=status, raw=raw)
    if isinstance(error, dict):
        return _Outcome(reason=f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip().rstrip(":"))
    return _Outcome(reason="no response in the batch's files")


class BatchClient:
    """The Batch API for one `OpenAIGenerator` (it owns the HTTP session, counters and retry policy)."""

    def __init__(self, generator, *, fallback: str = "none", poll_s: float = 10.0, poll_max_s: float = 120.0,
                 completion_window: str = "24h", max_requests: int = BATCH_MAX_REQUESTS,
                 max_bytes: int = BATCH_MAX_BYTES):
        if fallback not in FALLBACKS:
            raise UsageError(f"openai: batch_fallback={fallback!r}; use one of {', '.join(FALLBACKS)}")
        if poll_s <= 0 or poll_max_s <= 0:
            raise UsageError("openai: batch_poll_s and batch_poll_max_s must be positive (seconds)")
        if not 1 <= max_requests <= BATCH_MAX_REQUESTS:
            raise UsageError(f"openai: batch_max_requests must be within 1..{BATCH_MAX_REQUESTS}")
        if not 1 <= max_bytes <= BATCH_MAX_BYTES:
            raise UsageError(f"openai: batch_max_bytes must be within 1..{BATCH_MAX_BYTES}")
        self.generator = generator
        self.fallback = fallback
        self.poll_s, self.poll_max_s = float(poll_s), max(float(poll_s), float(poll_max_s))
        self.completion_window = str(completion_window)
        self.max_requests, self.max_bytes = int(max_requests), int(max_bytes)
        self.path: Path | None = None
        self.records: list[dict[str, Any]] = []
        self._jobs: dict[str, Any] = {}  # batch id -> the task polling and downloading it (shared by concurrent calls)

    # -- the records file ------------------------------------------------------------------

    def _mine(self, record: dict[str, Any]) -> bool:
        g = self.generator
        return (record.get("base_url") == g.base_url and record.get("model") == g.model
                and isinstance(record.get("batch_id"), str) and isinstance(record.get("custom_ids"), list))

    def bind(self, folder) -> None:
        """Keep batch records in `folder`/RECORDS_FILE, and read those an earlier run left there."""
        self.path = Path(folder) / RECORDS_FILE
        # repair_tail: a run killed mid-append leaves a torn last line; the next append must start a fresh one.
        self.records = [r for r in iter_jsonl(self.path, repair_tail=True) if self._mine(r)]
        if self.records:
            logger.info("openai: %d recorded batch(es) for %s in %s", len(self.records), self.generator.model, self.path)

    def _record(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is not None:
            writer = JsonlWriter(self.path, fsync=True)
            try:
                writer.write(record)
            finally:
                writer.close()

    # -- HTTP ------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, what: str, *, json_body: Any = None, data: Any = None,
                    raw: bool = False, missing_ok: bool = False):
        """One Batch API call with the generator's retries: parsed JSON (or bytes with `raw`); None on a
        404 with `missing_ok`."""
        import aiohttp

        g = self.generator
        session = g._ensure_client()
        url = f"{g.base_url}{path}"
        attempt = 0
        while True:
            attempt += 1
            reason, detail, wait_hint = "", "", None
            try:
                # File transfers may be large: bound the wait for each read, not the whole transfer.
                timeout = aiohttp.ClientTimeout(total=None, sock_connect=g.timeout, sock_read=g.timeout)
                payload = data() if callable(data) else data
                async with session.request(method, url, json=json_body, data=payload, timeout=timeout) as response:
                    body = await response.read()
                    status, headers = response.status, response.headers
                g._count("batch_api_calls")
                if status == 200:
                    if raw:
                        return body
                    try:
                        return json.loads(body)
                    except ValueError:
                        reason, detail = "malformed JSON", f"{len(body)} bytes that do not parse"
                elif status in (401, 403):
                    g._check_response(what, status, headers, body)  # raises the authentication UsageError
                elif status == 404 and missing_ok:
                    return None
                elif status == 404:
                    raise UsageError(g._redact(
                        f"openai: {g.base_url} has no Batch API ({method} {path}: HTTP 404: "
                        f"{server_message(body)}); use batch=false"))
                elif status in RETRYABLE or status >= 500:
                    from persona_eval.plugins.generators.openai_rate import retry_after

                    reason, detail, wait_hint = f"HTTP {status}", server_message(body), retry_after(headers)
                else:
                    raise RunError(g._redact(
                        f"openai: the Batch API at {g.base_url} rejected {what} (HTTP {status}): {server_message(body)}"))
            except asyncio.TimeoutError:
                reason, detail = "timeout", f"no answer within timeout={g.timeout:g}s"
            except aiohttp.ClientConnectorError as exc:
                reason, detail = "connect", f"cannot connect to {g.base_url} ({exc.strerror or type(exc).__name__})"
            except aiohttp.ClientError as exc:
                reason, detail = "connection", f"{type(exc).__name__}: {exc}"
            if attempt > g.max_retries:
                raise RunError(g._redact(
                    f"openai: {what} failed after {attempt} attempts at {g.base_url}: {reason}: {detail}"))
            g._count("retries", reason)
            await asyncio.sleep(g._delay(attempt, wait_hint))

    # -- one batch -------------------------------------------------------------------------

    def _report(self, text: str) -> None:
        logger.info("%s", text)
        hook = getattr(self.generator, "progress_hook", None)
        if callable(hook):
            try:
                hook(text)
            except Exception:  # noqa: BLE001 - a display problem must not fail a paid batch
                logger.debug("progress_hook raised", exc_info=True)

    async def _follow(self, record: dict[str, Any]) -> dict[str, _Outcome]:
        """Poll one batch to its end; the outcome of each custom id its files name."""
        batch_id = record["batch_id"]
        size = len(record["custom_ids"])
        delay, last = self.poll_s, None
        while True:
            info = await self._call("GET", f"/batches/{batch_id}", f"batch {batch_id}", missing_ok=True)
            self.generator._count("batch_polls")
            if not isinstance(info, dict):
                logger.warning("openai: batch %s is unknown at %s; its %d requests are sent again",
                               batch_id, self.generator.base_url, size)
                return {}
            status = str(info.get("status"))
            counts = info.get("request_counts") if isinstance(info.get("request_counts"), dict) else {}
            state = (status, counts.get("completed"), counts.get("failed"))
            if state != last:
                self._report(f"openai batch {batch_id} ({size} requests): {status}, "
                             f"{counts.get('completed', 0)} done, {counts.get('failed', 0)} failed")
                last = state
            if status in TERMINAL:
                break
            await asyncio.sleep(delay)
            delay = min(self.poll_max_s, delay * 1.5)
        outcomes: dict[str, _Outcome] = {}
        for key in ("error_file_id", "output_file_id"):  # output last: an answer beats an error for one id
            file_id = info.get(key)
            if not file_id:
                continue
            data = await self._call("GET", f"/files/{file_id}/content", f"the {key[:-8]} file of batch {batch_id}",
                                    raw=True, missing_ok=True)
            for raw in (data or b"").split(b"\n"):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue  # a torn line: its request counts as unanswered and is sent again
                if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                    outcomes[line["custom_id"]] = _line_outcome(line)
        if status != "completed":
            errors = info.get("errors") if isinstance(info.get("errors"), dict) else {}
            messages = [e.get("message") for e in errors.get("data") or () if isinstance(e, dict) and e.get("message")]
            reason = f"batch {status}" + (f": {messages[0]}" if messages else "")
            for custom in record["custom_ids"]:
                outcomes.setdefault(custom, _Outcome(reason=reason))
        return outcomes

    async def _outcomes(self, record: dict[str, Any]) -> dict[str, _Outcome]:
        """`_follow` of one batch, shared by the calls that wait for it (cancelled when none waits any more)."""
        batch_id = record["batch_id"]
        shared = self._jobs.get(batch_id)
        if shared is None:
            shared = self._jobs[batch_id] = [asyncio.ensure_future(self._follow(record)), 0]
        task = shared[0]
        shared[1] += 1
        try:
            return await asyncio.shield(task)
        finally:
            shared[1] -= 1
            if shared[1] == 0:
                task.cancel()  # a no-op once it is done
                self._jobs.pop(batch_id, None)

    # -- submitting ------------------------------------------------------------------------

    def _chunks(self, customs: Sequence[str], bodies: dict[str, dict[str, Any]],
                names: dict[str, str]) -> list[tuple[str, list[str], bytes]]:
        """(endpoint, custom ids, JSONL) per batch to submit, within the per-batch limits."""
        out: list[tuple[str, list[str], bytes]] = []
        by_endpoint: dict[str, list[str]] = {}
        for custom in customs:
            by_endpoint.setdefault(endpoint_of(bodies[custom]), []).append(custom)
        for endpoint, group in by_endpoint.items():
            ids: list[str] = []
            lines: list[bytes] = []
            size = 0
            for custom in group:
                line = json.dumps({"custom_id": custom, "method": "POST", "url": endpoint, "body": bodies[custom]},
                                  ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                if len(line) > self.max_bytes:
                    raise UsageError(f"openai: item {names[custom]!r} alone is {len(line)} bytes, over the "
                                     f"batch file limit of {self.max_bytes} bytes")
                if ids and (len(ids) >= self.max_requests or size + len(line) > self.max_bytes):
                    out.append((endpoint, ids, b"".join(lines)))
                    ids, lines, size = [], [], 0
                ids.append(custom)
                lines.append(line)
                size += len(line)
            if ids:
                out.append((endpoint, ids, b"".join(lines)))
        return out

    async def _submit(self, endpoint: str, customs: list[str], data: bytes) -> dict[str, Any]:
        import aiohttp

        def form():  # built afresh for each attempt: a FormData is spent once sent
            upload = aiohttp.FormData()
            upload.add_field("purpose", "batch")
            upload.add_field("file", data, filename="persona-eval-batch.jsonl", content_type="application/jsonl")
            return upload

        uploaded = await self._call("POST", "/files", f"the upload of a batch file ({len(customs)} requests)", data=form)
        file_id = uploaded.get("id") if isinstance(uploaded, dict) else None
        if not isinstance(file_id, str):
            raise RunError(f"openai: {self.generator.base_url} answered a file upload without a file id")
        created = await self._call("POST", "/batches", f"a batch of {len(customs)} requests", json_body={
            "input_file_id": file_id, "endpoint": endpoint, "completion_window": self.completion_window,
            "metadata": {"created_by": "persona-eval"},
        })
        batch_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(batch_id, str):
            raise RunError(f"openai: {self.generator.base_url} answered a batch creation without a batch id")
        record = {"batch_id": batch_id, "input_file_id": file_id, "endpoint": endpoint,
                  "base_url": self.generator.base_url, "model": self.generator.model,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "requests": len(customs),
                  "custom_ids": customs}
        self._record(record)  # before anything else can fail: a killed run must find this batch
        self.generator._count("batches")
        self.generator._count("batch_requests", amount=len(customs))
        self._report(f"openai batch {batch_id} submitted: {len(customs)} requests to {endpoint}")
        return record

    # -- the whole call --------------------------------------------------------------------

    async def run(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """The response body of every (item id, request body), in order."""
        g = self.generator
        customs = [custom_id(body) for _, body in items]
        bodies: dict[str, dict[str, Any]] = {}
        names: dict[str, str] = {}
        for (item_id, body), custom in zip(items, customs):
            bodies.setdefault(custom, body)
            names.setdefault(custom, item_id)
        answers: dict[str, dict[str, Any]] = {}
        reasons: dict[str, str] = {}
        tried: set[str] = set()

        async def collect(records: list[dict[str, Any]]) -> None:
            found = await asyncio.gather(*(self._outcomes(r) for r in records))
            for record, outcomes in zip(records, found):
                for custom in record["custom_ids"]:
                    if custom not in bodies or custom in answers:
                        continue
                    tried.add(custom)
                    outcome = outcomes.get(custom) or _Outcome(reason=f"not in the files of batch {record['batch_id']}")
                    if outcome.body is not None:
                        answers[custom] = outcome.body
                    elif outcome.status is not None:  # cannot succeed on a retry: the synchronous path's error
                        g._check_response(names[custom], outcome.status, {}, outcome.raw)
                        raise RunError(f"openai: item {names[custom]!r} failed in batch {record['batch_id']}: "
                                       f"{outcome.reason}")
                    else:
                        reasons[custom] = f"{outcome.reason} (batch {record['batch_id']})"

        # Re-attach, newest first, to recorded batches covering what is asked for.
        wanted = set(bodies)
        attach = []
        for record in reversed(self.records):
            covered = wanted.intersection(record["custom_ids"])
            if covered:
                attach.append(record)
                wanted -= covered
        if attach:
            g._count("batches_reattached", amount=len(attach))
            self._report(f"openai: re-attaching to {len(attach)} recorded batch(es) covering "
                         f"{len(bodies) - len(wanted)} of {len(bodies)} requests")
            await collect(attach)
        rounds = 0
        while True:
            missing = [c for c in bodies if c not in answers]
            if not missing:
                break
            again = [c for c in missing if c in tried]
            if again and self.fallback == "sync":
                g._count("batch_fallback_sync", amount=len(again))
                self._report(f"openai: {len(again)} request(s) the batches did not answer go through the synchronous endpoint")
                datas = await g._gather([(names[c], bodies[c]) for c in again])
                answers.update(zip(again, datas))
                continue
            if again:
                if rounds >= g.max_retries + 1:
                    first = again[0]
                    raise RunError(g._redact(
                        f"openai: item {names[first]!r} got no answer from {rounds} batch submission(s) at "
                        f"{g.base_url} (last: {reasons.get(first, 'unknown')}); {len(again)} request(s) unanswered"))
                g._count("batch_resubmitted", amount=len(again))
                self._report(f"openai: sending {len(again)} unanswered request(s) again as a new batch")
            records = []
            for endpoint, ids, data in self._chunks(missing, bodies, names):
                records.append(await self._submit(endpoint, ids, data))
            rounds += 1
            await collect(records)
        return [answers[c] for c in customs]


