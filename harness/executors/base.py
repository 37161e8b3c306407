"""The executor interface and the local executor (today's behaviour), with the ray executor's settings.

`Executor` is what the stages call (`prepare` before any folder, `distributes`/`map` per stage,
`close` at the end); `LocalExecutor` computes nothing itself, so every stage runs in-process.
`RayOptions` holds ``--executor ray,...`` settings once parsed (`persona_eval.executors.parse_executor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence


def distributable(generator: Any) -> bool:
    """Whether sending this generator's work to a cluster can help (API endpoints and imported files cannot)."""
    return bool(getattr(generator, "distributable", True))


class Executor:
    """Computes a stage's cache misses; the default computes nothing itself (the stage does, in-process)."""

    name = "local"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def prepare(self, generators: Iterable[Any]) -> None:
        """Connect to whatever the stages will use, before any folder is made (a bad address fails here)."""

    def distributes(self, work: Any) -> bool:
        """True where `map` should compute this work; False: the stage computes it in this process."""
        return False

    def map(self, work: Any, inputs: Sequence[Any], batch_size: int) -> Iterator[tuple[list[int], list[Any]]]:
        """(positions in `inputs`, their outputs) per finished batch, in any order."""
        raise NotImplementedError

    def chunk_items(self, default: int) -> int:
        """How many items a caller that loops in chunks (persona inference) should hand over per call."""
        return default

    def close(self) -> None:
        """Disconnect (only from what `prepare` itself started)."""


class LocalExecutor(Executor):
    """Today's behaviour: every stage computes its misses in this process."""


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None
    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    batch_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}
