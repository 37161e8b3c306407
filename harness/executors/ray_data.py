"""The ray executor: a stage's cache misses through Ray Data, on an actor pool, streamed back to the driver.

`RayExecutor.map` cuts the miss requests into batches as a local run does and makes a dataset of
them (one row per batch: its positions and its requests as JSON), runs ``map_batches`` over
``ActorPoolStrategy(size=replicas)``, where every actor (`RayWorker`) builds the generator or
judge from the stage's `work` spec, and yields each finished batch to the driver as it arrives
(``iter_batches``), positions included, so the driver maps results back to inputs whatever order
batches finish in. Ray Data's actor pools restart a dead actor and retry
its batch (``max_restarts=-1``, ``max_task_retries=-1`` by default); an error raised by the
backend inside a worker comes back as data and is raised in the driver as one line.

``vllm:`` specs go through Ray Data LLM instead (`vllm_ray`), API and file backends stay in the
driver (`persona_eval.executors.distributable`). ray is imported only when a run connects.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from typing import Any, Iterable, Iterator, Sequence

from persona_eval.errors import PersonaEvalError, RunError, UsageError
from persona_eval.executors.base import Executor, RayOptions, distributable
from persona_eval.executors.work import driver_environment, identity_hash

logger = logging.getLogger(__name__)

INSTALL_HINT = "--executor ray needs Ray Data: pip install 'persona-eval[ray]'"
# How long a cluster address may take to accept a TCP connection before it counts as unreachable.
CONNECT_TIMEOUT_S = 3.0


def _probe(address: str) -> None:
    """A cluster given as HOST:PORT or ray://HOST:PORT must accept a connection within a few seconds.

    ray.init would otherwise retry a dead address for a minute or more before failing.
    """
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = rest.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or type(exc).__name__).lower()
        raise UsageError(f"--executor ray: cannot reach the Ray cluster at {address} ({reason}); "
                         "start one with `ray start --head` or fix address=") from None


def _auth_hint(address: str | None) -> str:
    """Ray sends its token only when told to for an explicit address: the likeliest cause of a refusal."""
    from pathlib import Path

    if address in (None, "auto", "local") or os.environ.get("RAY_AUTH_MODE"):
        return ""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or (Path.home() / ".ray" / "auth_token").exists():
        return " (a cluster started with token authentication also needs RAY_AUTH_MODE=token here)"
    return ""


def _route_ray_notices() -> None:
    """Ray's driver prints cluster notices (a worker died and its task is retried, ...) on stdout.

    stdout carries results (``run --json | jq``), so those go to our log instead (shown with -v);
    the run itself reports what failed for good. Ray looks this printer up by name for every
    notice, so replacing it is enough; anything else is printed as Ray prints it.
    """
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "persona_eval", False):
        return

    def to_log(data, ignore_prefix):
        if not data.get("is_err") and data.get("pid") == "raylet":
            for line in data.get("lines") or ():
                logger.info("ray: %s", " ".join(str(line).split()))
            return
        original(data, ignore_prefix)

    to_log.persona_eval = True
    ray_worker.print_to_stdstream = to_log


def _quiet_ray_data() -> None:
    """Our own progress display and log stay the only ones: Ray Data's bars and per-dataset lines are off."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    # Errors still show; Ray's notes (bars disabled, resources, deprecations) only with -v.
    for name in ("ray.data", "ray.llm"):
        logging.getLogger(name).setLevel(_ray_log_level())


def _ray_log_level() -> int:
    return logging.WARNING if logging.getLogger("persona_eval").getEffectiveLevel() <= logging.INFO else logging.ERROR


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, options: RayOptions):
        self.options = options
        self._connected = False
        self._owns = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.options.to_dict()}

    # -- connecting ------------------------------------------------------------------------

    def prepare(self, generators: Iterable[Any]) -> None:
        if self._connected:
            return
        if not any(distributable(g) for g in generators):
            # API endpoints fill themselves through concurrency; the stages run in this process.
            logger.info("--executor ray: every model of this run is an API endpoint or a file; nothing goes to the cluster")
            return
        self._connect()

    def _connect(self) -> None:
        try:
            import ray
        except ImportError as exc:
            raise UsageError(INSTALL_HINT) from exc
        address = self.options.address
        if ray.is_initialized():  # a notebook or a test that connected already: use that cluster
            self._connected = True
            _route_ray_notices()
            _quiet_ray_data()
            return
        if address not in (None, "auto", "local"):
            _probe(address)
        where = address or "RAY_ADDRESS, the last `ray start` or a new local instance"
        # Ray's C++ core logs notes on stderr that concern Ray Data's internals, not the user
        # (RAY_BACKEND_LOG_LEVEL=info brings them back).
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        _route_ray_notices()
        try:
            ray.init(address=address, log_to_driver=False, logging_level=_ray_log_level(), include_dashboard=False,
                     ignore_reinit_error=True)
        except ImportError as exc:
            raise UsageError(INSTALL_HINT) from exc
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors: all mean "not reachable"
            detail = " ".join(str(exc).split())[:160]
            raise UsageError(f"--executor ray: cannot connect to the Ray cluster at {where}: {detail}{_auth_hint(address)}") from None
        self._connected = self._owns = True
        _quiet_ray_data()
        try:
            self._check_resources()
        except UsageError:
            self.close()
            raise

    def _check_resources(self) -> None:
        """One replica must fit the cluster: Ray would otherwise wait for resources that never come."""
        import ray

        total = ray.cluster_resources()
        for key, wanted in (("CPU", self.options.cpus_per_replica), ("GPU", self.options.gpus_per_replica)):
            if wanted and total.get(key, 0) < wanted:
                setting = f"{key.lower()}s_per_replica"
                raise UsageError(f"--executor ray: {setting}={wanted:g}, but the cluster has {total.get(key, 0):g} {key}s")

    def close(self) -> None:
        if self._owns:
            import ray

            ray.shutdown()
        self._connected = self._owns = False

    # -- computing ---------------------------------------------------------------------------

    def distributes(self, work: Any) -> bool:
        if not self._connected:
            return False
        from persona_eval.contracts.factories import build_generator

        spec = work.spec if work.kind == "generate" else work.model
        return distributable(build_generator(spec, option=getattr(work, "option", "--judge-model")))

    def chunk_items(self, default: int) -> int:
        # Each call is a dataset whose actors load the model: hand over enough to keep every replica busy.
        return max(default, 64 * self.options.replicas)

    def _batch_size(self, count: int, preferred: int) -> int:
        if self.options.batch_size:
            return self.options.batch_size
        size = max(1, preferred)
        # The backend's own batch (as a local run uses) unless that would leave replicas idle.
        if math.ceil(count / size) < self.options.replicas:
            size = max(1, math.ceil(count / self.options.replicas))
        return size

    def map(self, work: Any, inputs: Sequence[Any], batch_size: int) -> Iterator[tuple[list[int], list[Any]]]:
        if not inputs:
            return iter(())
        built = work.build()  # in this process: pooled, no weights load; what every worker must match
        generator = built if work.kind == "generate" else None
        if generator is not None and callable(getattr(generator, "ray_llm_config", None)):
            from persona_eval.executors.vllm_ray import llm_map

            return llm_map(generator, list(inputs), self.options, self._batch_size(len(inputs), batch_size))
        return self._actor_map(work, identity_hash(work.identity(built)), inputs, self._batch_size(len(inputs), batch_size))

    def _actor_map(self, work, expected: str, inputs: Sequence[Any], size: int) -> Iterator[tuple[list[int], list[Any]]]:
        import ray
        import ray.data

        # One row per batch, cut exactly as a local run cuts them (consecutive misses, `size` each):
        # an actor call then sees the very batch a local run would hand the backend.
        rows = [{"positions": json.dumps(list(range(start, min(start + size, len(inputs))))),
                 "requests": json.dumps([work.encode_input(item) for item in inputs[start : start + size]], ensure_ascii=False)}
                for start in range(0, len(inputs), size)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        results = dataset.map_batches(
            RayWorker,
            fn_constructor_kwargs={"work": work, "cwd": os.getcwd(), "env": driver_environment()},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=max(1, min(self.options.replicas, len(rows)))),
            num_cpus=self.options.cpus_per_replica,
            num_gpus=self.options.gpus_per_replica or None,
            udf_modifying_row_count=False,
        )
        try:
            for block in results.iter_batches(batch_size=None, batch_format="numpy"):
                for positions, outputs, error, ident in zip(block["positions"], block["outputs"], block["error"], block["identity"]):
                    if error:
                        raise _worker_error(str(error))
                    if ident != expected:
                        raise RunError(
                            f"{work.describe()}: a Ray worker built a different model than this process (identity "
                            f"{ident} vs {expected}); install the same persona-eval, plugins and model files on every node")
                    yield json.loads(positions), [work.decode_output(o) for o in json.loads(outputs)]
        except PersonaEvalError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost cluster, an actor that cannot start: one line
            detail = " ".join(str(exc).split())[:200]
            raise RunError(f"{work.describe()} on the Ray cluster failed: {type(exc).__name__}: {detail} "
                           "(finished results are saved; rerun the same command to resume)") from exc


def _worker_error(text: str) -> PersonaEvalError:
    kind, _, message = text.partition("\t")
    return UsageError(message) if kind == "usage" else RunError(message)


def _error_text(work, exc: BaseException) -> str:
    if isinstance(exc, PersonaEvalError):
        return f"{'usage' if isinstance(exc, UsageError) else 'run'}\t{exc}"
    detail = " ".join(str(exc).split())[:300]
    return f"run\t{work.describe()} failed on a Ray worker: {type(exc).__name__}{': ' + detail if detail else ''}"


class RayWorker:
    """One actor of the pool: builds the stage's generator or judge once, then answers batches.

    It takes over the driver's working folder (relative paths in specs, such as an adapter folder,
    mean the same) and its persona-eval and Hugging Face environment (the same cache and models).
    Errors are returned as data, one per row, so the driver reports them as one line; a dead
    process is Ray's to restart.
    """

    def __init__(self, work, cwd: str | None = None, env: dict[str, str] | None = None):
        os.environ.update(env or {})
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        self.work = work
        self.error = ""
        try:
            self.built = work.build()
            self.identity = identity_hash(work.identity(self.built))
        except Exception as exc:  # noqa: BLE001 - reported by the driver, not a Ray traceback
            self.built, self.identity, self.error = None, "", _error_text(work, exc)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Each row is one batch: its positions and requests as JSON; the answer, its outputs as JSON."""
        out: dict[str, list[str]] = {"positions": [], "outputs": [], "error": [], "identity": []}
        for positions, requests in zip(batch["positions"], batch["requests"]):
            error, encoded = self.error, "[]"
            if not error:
                try:
                    inputs = [self.work.decode_input(item) for item in json.loads(requests)]
                    outputs = self.work.run(self.built, inputs)
                    if len(outputs) != len(inputs):
                        raise RunError(f"{self.work.describe()}: {len(outputs)} results for {len(inputs)} inputs")
                    encoded = json.dumps([self.work.encode_output(o) for o in outputs], ensure_ascii=False)
                except Exception as exc:  # noqa: BLE001 - returned to the driver
                    error = _error_text(self.work, exc)
            for key, value in (("positions", str(positions)), ("outputs", encoded), ("error", error), ("identity", self.identity)):
                out[key].append(value)
        return out
