"""How many requests the `openai` backend lets out at once, and when: adaptive concurrency against rate limits.

`Governor` hands out slots on the generator's event loop, first come first served:

- AIMD concurrency: the first request goes alone (its answer's headers tell the server's
  limits); then the window of requests in flight starts at ``max_concurrency``, halves on
  a 429 and grows by one per window of successes, never above ``max_concurrency``. A burst
  of 429s is one decrease: only a request sent since the last decrease counts, and only once
  an answer to one of those came back (429s come back at once, answers take the latency). A
  halving stops at what the rate the server did admit needs (goodput x latency);
- a 429's ``retry-after`` (``retry-after-ms``) pauses every new request, not only the retried
  one; from a server without rate-limit headers, the starts after it are also spaced by that
  wait for a few round trips, so a pause ends with one request, not a crowd;
- pacing by the server's own headers (OpenAI's ``x-ratelimit-limit-*``, ``-remaining-*`` and
  ``-reset-*``, for ``requests`` and ``tokens``): the servers meter with token buckets, so the
  refill rate is ``(limit - remaining) / reset``, and the bucket's level now is what the last
  answer reported, plus what refilled since its request left, minus what the requests sent after
  it took. A request waits until its bucket holds its cost plus a one-request reserve, so a
  steady run sends at the server's rate instead of finding it by 429s. A request's token cost
  is estimated as characters / 4 of its messages plus its max tokens (as OpenAI meters it).

With ``adaptive=False`` it is a plain FIFO semaphore of ``max_concurrency`` (the baseline of
``bench/rate_limit.py``). `parse_duration` reads the reset headers (``"1s"``, ``"6m0s"``, ``"12ms"``).
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

from persona_eval.lazy_import import LazyModule

asyncio = LazyModule("asyncio")

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: Any) -> float | None:
    """Seconds in a Go-style duration (``"6m0s"``, ``"1.5s"``, ``"12ms"``) or a bare number; None if neither."""
    if text is None:
        return None
    text = str(text).strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total, position = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


def _number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The server's requested wait in seconds (``retry-after-ms``, else ``retry-after`` in seconds)."""
    if not headers:
        return None
    millis = _number(headers, "retry-after-ms")
    if millis is not None:
        return millis / 1000.0
    return _number(headers, "retry-after")


def token_cost(body: Mapping[str, Any]) -> float:
    """What a request takes from a tokens-per-minute bucket, estimated before it is sent."""
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        chars += len(content) if isinstance(content, str) else 0
    prompt = body.get("prompt")
    chars += len(prompt) if isinstance(prompt, str) else 0
    most = body.get("max_completion_tokens", body.get("max_tokens")) or 0
    return chars / 4.0 + (most if isinstance(most, (int, float)) else 0)


class _Bucket:
    """The client's estimate of one of the server's buckets, from its headers."""

    def __init__(self, name: str):
        self.name = name
        self.size: float | None = None
        self.rate: float | None = None  # per second
        self.level: float | None = None
        self.stamp = 0.0

    def refill(self, now: float) -> None:
        if self.level is not None and self.rate and self.size is not None:
            self.level = min(self.size, self.level + self.rate * (now - self.stamp))
        self.stamp = now

    def observe(self, headers: Mapping[str, str], sent_at: float, taken_since: float, now: float) -> None:
        """An answer's headers; `taken_since` is what requests sent after it took from this bucket."""
        size = _number(headers, f"x-ratelimit-limit-{self.name}")
        remaining = _number(headers, f"x-ratelimit-remaining-{self.name}")
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{self.name}"))
        if size is None or remaining is None or size <= 0:
            return
        if reset is not None and reset > 0 and size - remaining >= 2:
            # `remaining` is rounded down and `reset` measured from the exact level, so the refill
            # took between size - remaining - 1 and size - remaining units: take the lower bound.
            # Underestimating the rate only keeps the bucket a little fuller; overestimating it
            # is what brings 429s.
            rate = (size - remaining - 1) / reset
            self.rate = rate if self.rate is None else 0.8 * self.rate + 0.2 * rate
        self.size = size
        self.level = min(size, remaining + (self.rate or 0.0) * max(0.0, now - sent_at) - taken_since)
        self.stamp = now

    def wait(self, cost: float, reserve: float, now: float) -> float:
        """Seconds until the bucket holds `cost` plus `reserve`: 0 now (and for a bucket never
        reported), inf until an answer tells more (the level is known, its refill rate not yet)."""
        if self.level is None or self.size is None:
            return 0.0
        self.refill(now)
        need = min(cost + min(reserve, max(0.0, self.size - cost)), self.size)
        if self.level >= need:
            return 0.0
        if not self.rate:
            return math.inf
        return (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        if self.level is not None:
            self.level -= cost


@dataclass
class Slot:
    """One request's place in flight; `status` and `headers` are filled in from its answer."""

    epoch: int
    sent_at: float
    cost: float
    requests_taken: float  # the governor's totals when this request left
    tokens_taken: float
    status: int | None = None
    headers: Mapping[str, str] | None = None


class Governor:
    """Slots for requests on one event loop (see the module docstring)."""

    def __init__(self, max_concurrency: int, adaptive: bool = True):
        self.max_concurrency = int(max_concurrency)
        self.adaptive = bool(adaptive)
        self.window = float(max_concurrency)
        self.min_window = self.window
        self.decreases = 0
        self.in_flight = 0
        self.epoch = 0
        self._confirmed = True
        self.resume_at = 0.0
        self.last_start = 0.0
        self.spacing = self.spacing_until = 0.0
        self.requests = _Bucket("requests")
        self.tokens = _Bucket("tokens")
        self._requests_taken = 0.0
        self._tokens_taken = 0.0
        self._waiters: deque = deque()  # (future, cost), first come first served
        self._timer = None
        self.latency = 0.0  # seconds per successful request, smoothed
        self._answered: deque = deque()  # when recent successes came back
        self._since: float | None = None  # when the first request of this loop left
        self._answers = 0  # answers seen (of any status)

    def _goodput(self, now: float) -> float:
        """Successes per second over the last few round trips (0 until that span has passed)."""
        span = max(1.0, 4.0 * self.latency)
        while self._answered and self._answered[0] < now - span:
            self._answered.popleft()
        if self._since is None or now - self._since < span:
            return 0.0
        return len(self._answered) / span

    def limit(self) -> int:
        if not self.adaptive:
            return self.max_concurrency
        # The first request goes alone: its answer's headers say how fast the others may follow.
        return max(1, int(self.window)) if self._answers else 1

    def _wait(self, cost: float, now: float) -> float:
        if not self.adaptive:
            return 0.0
        spaced = self.last_start + self.spacing - now if now < self.spacing_until else 0.0
        return max(self.resume_at - now, spaced, self.requests.wait(1.0, 1.0, now), self.tokens.wait(cost, cost, now))

    def _start(self, cost: float, now: float) -> Slot:
        if self._since is None:
            self._since = now
        self.last_start = now
        self.in_flight += 1
        self._requests_taken += 1.0
        self._tokens_taken += cost
        self.requests.take(1.0)
        self.tokens.take(cost)
        return Slot(self.epoch, now, cost, self._requests_taken, self._tokens_taken)

    def _dispatch(self) -> None:
        """Start the requests at the head of the queue that may start now; set a timer for the next."""
        self._timer = None
        loop = asyncio.get_running_loop()
        while self._waiters and self.in_flight < self.limit():
            future, cost = self._waiters[0]
            if future.done():  # cancelled while queued
                self._waiters.popleft()
                continue
            now = loop.time()
            wait = self._wait(cost, now)
            if wait == math.inf and self.in_flight == 0:
                wait = 0.0  # nothing in flight can tell more: one request goes and asks
            if wait == math.inf:
                return  # the next answer (release) dispatches again
            if wait > 0:
                self._timer = loop.call_later(wait, self._dispatch)
                return
            self._waiters.popleft()
            future.set_result(self._start(cost, now))

    async def acquire(self, cost: float = 0.0) -> Slot:
        loop = asyncio.get_running_loop()
        if not self._waiters and self.in_flight < self.limit():
            now = loop.time()
            wait = self._wait(cost, now)
            if wait <= 0 or (wait == math.inf and self.in_flight == 0):
                return self._start(cost, now)
        future = loop.create_future()
        self._waiters.append((future, cost))
        if self._timer is None:
            self._dispatch()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted just as it was cancelled
                self.release(future.result())
            raise

    def release(self, slot: Slot) -> None:
        self.in_flight -= 1
        self._answers += 1  # answered or failed: either way the first request is no longer alone
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.adaptive:
            if slot.headers:
                self.requests.observe(slot.headers, slot.sent_at, self._requests_taken - slot.requests_taken, now)
                self.tokens.observe(slot.headers, slot.sent_at, self._tokens_taken - slot.tokens_taken, now)
            if slot.status == 429:
                # One decrease per round trip, however many 429s it brings: only for a request sent
                # since the last decrease, once one sent since then has come back with an answer
                # (429s come back at once, answers take the full latency).
                if slot.epoch == self.epoch and self._confirmed:
                    # Never below what the rate the server did admit needs (Little's law): a halving
                    # under that would only leave the server's budget unspent, for many round trips.
                    goodput = self._goodput(now)
                    self.window = max(1.0, self.window / 2.0, min(self.window, 0.9 * goodput * self.latency))
                    self.min_window = min(self.min_window, self.window)
                    self.decreases += 1
                    self.epoch += 1
                    self._confirmed = False
                pause = retry_after(slot.headers)
                if pause:
                    self.resume_at = max(self.resume_at, now + pause)
                    if self.requests.rate is None:
                        # No refill rate to pace by: for a few round trips, space the starts by the wait the
                        # server asked for (about one request's worth of its budget), so the end of a
                        # pause lets one request out, not a crowd that meets the next 429.
                        self.spacing, self.spacing_until = pause, now + max(4.0 * self.latency, pause)
            elif slot.status == 200:
                self._confirmed = self._confirmed or slot.epoch == self.epoch
                self.window = min(float(self.max_concurrency), self.window + 1.0 / self.window)
                took = now - slot.sent_at
                self.latency = took if not self.latency else 0.9 * self.latency + 0.1 * took
                self._answered.append(now)
        if self._timer is not None:
            self._timer.cancel()
        self._dispatch()

    def detach(self) -> None:
        """Forget what belongs to the event loop (timer, queue), keeping what was learned, when that loop stops."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._waiters.clear()
        self.in_flight = 0
        self._answered.clear()
        self._since = None

    def stats(self) -> dict[str, Any]:
        return {"concurrency": self.limit(), "concurrency_min": max(1, int(self.min_window)),
                "concurrency_decreases": self.decreases}
