"""How many CPU threads torch generates with: the `threads=` option of the `hf` backend.

torch's OpenMP pool has one thread per CPU, and by default each thread spin-waits at
every barrier. When another process holds one of those CPUs, every barrier waits for a
descheduled thread, and a small model generates several times slower than it would with
fewer threads. The `auto` policy (the default, CPU only) therefore

* asks OpenMP to sleep rather than spin while it waits (``OMP_WAIT_POLICY=PASSIVE``),
  when torch has not been imported yet and the user set no policy: libgomp reads it once,
  when torch loads it;
* before each generation call, uses as many threads as there are CPUs, of those this
  process may run on, that other processes did not keep busy since the previous call
  (read from /proc/stat, this process's own CPU time taken out), never more than torch's
  own count and never fewer than one.

An integer (``threads=2``) is used as it is. ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``
in the environment, or a ``torch.set_num_threads`` call by someone else after `auto` set
a count, turn `auto` off; a count the program set before is the most `auto` uses.
The inter-op pool is left alone: `generate` runs no inter-op work. A thread count changes
speed, not the tokens (greedy outputs match with 1 and 2 threads), so it stays out of
identities and cache keys.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from persona_eval.errors import UsageError

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
PROC_STAT = Path("/proc/stat")
# Shorter windows are mostly rounding: /proc/stat counts in 10 ms ticks.
MIN_WINDOW_S = 0.25

# The count this module last gave torch: any other value means someone else chose.
_last_set: int | None = None
# torch's own count, read once, before this module changed it.
_torch_default: int | None = None


def parse_threads(backend: str, value: Any) -> int | str:
    """`auto` (also when absent) or a positive integer."""
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{backend}: threads must be a positive integer or 'auto', not {value!r}")
    return value


def usable_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def prefer_sleeping_waits() -> None:
    """Before torch loads libgomp: idle OpenMP threads sleep instead of spinning, unless the user chose."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def threads_for(cpus: int, others_busy: float | None) -> int:
    """CPUs left over by other processes, rounded to the nearest whole CPU, at least one."""
    if others_busy is None:
        return cpus
    return max(1, min(cpus, int(cpus - others_busy + 0.5)))


class CpuSampler:
    """How many of our CPUs other processes kept busy between two calls."""

    def __init__(self, cpus: set[int]):
        self.cpus = {f"cpu{n}" for n in cpus}
        self._last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        """(busy seconds on our CPUs, this process's CPU seconds, monotonic now)."""
        try:
            lines = PROC_STAT.read_text().splitlines()
        except OSError:
            return None
        ticks = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if name in self.cpus:
                # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait;
                # steal counts as busy (the hypervisor gave the CPU to someone else).
                fields = [int(x) for x in rest.split()[:8]]
                ticks += sum(fields) - fields[3] - fields[4]
        return ticks / os.sysconf("SC_CLK_TCK"), time.process_time(), time.monotonic()

    def others_busy(self, *, wait: bool) -> float | None:
        """CPUs' worth of other processes' work since the last reading; None when unknown.

        A window shorter than MIN_WINDOW_S is waited out when `wait`, else it gives None
        and the window keeps growing until the next call.
        """
        if self._last is None:
            return None
        now = self._read()
        if now is None:
            return None
        if now[2] - self._last[2] < MIN_WINDOW_S:
            if not wait:
                return None
            time.sleep(MIN_WINDOW_S - (now[2] - self._last[2]))
            now = self._read() or now
        busy = (now[0] - self._last[0]) - (now[1] - self._last[1])
        wall = now[2] - self._last[2]
        self._last = now
        return max(0.0, busy / wall) if wall > 0 else None


class ThreadPolicy:
    """One generator's thread setting, applied before each of its generation calls."""

    def __init__(self, setting: int | str, device: str):
        # No torch here: a generator is built (identity, dry-run plan) long before it generates.
        self.setting = setting
        self.cpu = device.split(":")[0] == "cpu"
        self.cpus = usable_cpus()
        self._sampler: CpuSampler | None = None
        self._count: int | None = None
        if self.setting == "auto" and self.cpu and not self.user_chose():
            # The first generation call measures the load since construction.
            self._sampler = CpuSampler(self.cpus)

    @staticmethod
    def user_chose() -> bool:
        if any(os.environ.get(name) for name in THREAD_ENV):
            return True
        if "torch" not in sys.modules:
            return False
        import torch

        return _last_set is not None and torch.get_num_threads() != _last_set

    def apply(self) -> int | None:
        """Set torch's thread count for the next call; the count set, or None when left alone."""
        global _last_set, _torch_default
        import torch

        if _torch_default is None:
            # Before this module first changes it: torch's default, or what the program set.
            _torch_default = torch.get_num_threads()
        if isinstance(self.setting, int):
            count = self.setting
        elif self._sampler is None or self.user_chose():
            return None
        else:
            ceiling = min(len(self.cpus), _torch_default or len(self.cpus))
            # Quick successive calls (log-probabilities, tiny batches) keep the last count.
            others = self._sampler.others_busy(wait=self._count is None)
            count = self._count if others is None and self._count is not None else threads_for(ceiling, others)
            self._count = count
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
        _last_set = count
        return count
