"""Data-parallel training over several processes: ``persona-eval train ... --num-processes N``.

The command checks every input in the calling process, then relaunches the same training
(``python -m persona_eval.trainers.sft|dpo`` with the same options) under ``accelerate launch
--multi_gpu --num_processes N``: one worker per GPU, or N CPU workers talking over gloo when
the training runs on the CPU. ``accelerate launch -m persona_eval.trainers.sft ...`` (and
``torchrun``) start the same workers without this wrapper, on one machine or several.

Workers and the caller share a control folder (its path in ``PERSONA_EVAL_TRAIN_CONTROL``):

- ``error-rank<R>.json``: the one-line error of a worker that failed (with its exit code and,
  for an unexpected exception, a traceback file next to it); the caller prints the first one.
- ``launcher.json``: what torch's launcher saw fail (rank, exit code), for a worker that died
  without a word (killed, out of memory).
- ``stop``: written by the caller on Ctrl-C. The workers run in their own session (the
  terminal's Ctrl-C reaches only the caller, whose launcher would otherwise kill them), check
  for it after every step and, agreeing over the process group, stop after the same step.
- ``interrupted``: the main worker saved an interrupted (usable, resumable) output.

Only the main process (global rank 0) writes the output. A fresh training writes into a hidden
sibling folder (`partial_dir`) that is renamed to ``--output`` once complete; a failure leaves
``--output`` as it was, and the caller removes the hidden folder. This module imports neither
torch nor accelerate at import time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from persona_eval.errors import RunError, UsageError

CONTROL_ENV = "PERSONA_EVAL_TRAIN_CONTROL"
STOP_FILE = "stop"
INTERRUPTED_FILE = "interrupted"
LAUNCHER_FILE = "launcher.json"
MAX_PROCESSES = 1024


# -- the process's place in the job -----------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """Processes in the job as torchrun / accelerate launch set them (1 when not launched)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's global rank (0 when not launched)."""
    return _env_int("RANK", 0)


def num_machines() -> int:
    local = max(1, _env_int("LOCAL_WORLD_SIZE", world_size()))
    return max(1, world_size() // local)


def partial_dir(out: Path) -> Path:
    """Where a fresh training writes before it becomes `out`: a hidden sibling, same file system."""
    return out.parent / f".{out.name}.partial"


def publish(work: Path, out: Path, checkpoints: str = "checkpoints") -> None:
    """Move the finished folder `work` to `out` (replacing an earlier output that --overwrite allowed)."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        else:
            out.rmdir()
    work.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _repoint_checkpoints(out / checkpoints)


def _repoint_checkpoints(folder: Path) -> None:
    """Checkpoints kept for --resume name the best checkpoint by its old path: point it at the new one.

    The Trainer drops a recorded best checkpoint that no longer exists, so without this a resumed
    run would end on its last epoch instead of its best one.
    """
    for state_file in folder.glob("checkpoint-*/trainer_state.json"):
        state = json.loads(state_file.read_text(encoding="utf-8"))
        best = state.get("best_model_checkpoint")
        if best:
            state["best_model_checkpoint"] = str(folder / Path(best).name)
            state_file.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# -- the workers' side of the control folder --------------------------------------------------


def control_dir() -> Path | None:
    value = os.environ.get(CONTROL_ENV)
    return Path(value) if value else None


def stop_requested() -> bool:
    control = control_dir()
    return control is not None and (control / STOP_FILE).exists()


def mark_interrupted() -> bool:
    """Tell the caller the saved output is an interrupted one; False when there is no caller."""
    control = control_dir()
    if control is None:
        return False
    (control / INTERRUPTED_FILE).write_text(str(rank()), encoding="utf-8")
    return True


def report_worker_error(message: str, exit_code: int, traceback_text: str | None = None) -> bool:
    """Leave this worker's one-line error for the caller; False when there is no caller (print it then)."""
    control = control_dir()
    if control is None:
        return False
    entry: dict[str, Any] = {"rank": rank(), "exit_code": exit_code, "message": message, "time": time.time()}
    if traceback_text:
        trace = control / f"traceback-rank{rank()}.txt"
        trace.write_text(traceback_text, encoding="utf-8")
        entry["traceback"] = str(trace)
    target = control / f"error-rank{rank()}.json"
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(entry), encoding="utf-8")
    temporary.replace(target)
    return True


def any_rank(flag: bool, device) -> bool:
    """True on every process when `flag` is true on any (one tiny all-reduce; `flag` itself alone)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    import torch

    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def backend() -> str | None:
    """The process group's backend (gloo, nccl), None when there is none."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a training dependency
        return None
    if dist.is_available() and dist.is_initialized():
        return str(dist.get_backend())
    return None


# -- the caller: relaunch under accelerate ----------------------------------------------------


class WorkerFailed(RunError):
    """A worker's failure, reported by the caller with the worker's exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code if exit_code > 0 else 1


def worker_argv(command, options: dict[str, Any]) -> list[str]:
    """The command line that gives a worker the same options (``--num-processes`` left out)."""
    import click

    argv: list[str] = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "num_processes":
            continue
        value = options.get(param.name)
        flag = param.opts[0]
        if param.is_flag:
            if value:
                argv.append(flag)
        elif param.multiple:
            for item in value or ():
                argv += [flag, str(item)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def _threads_per_process(num_processes: int) -> int:
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // num_processes)


def launch_arguments(num_processes: int, module: str, argv: list[str]) -> list[str]:
    """``accelerate launch`` arguments for N workers on this machine running ``python -m module argv``."""
    # --multi_gpu is accelerate's torchrun launcher; on a CPU-only job the workers' TrainingArguments
    # (use_cpu) make accelerate pick gloo. Its --cpu flag would start a single process instead.
    return [
        "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", "0", "-m", module, *argv,
    ]


def launch(kind: str, command, options: dict[str, Any], *, num_processes: int, use_cpu: bool, out: Path,
           resume: bool, module: str | None = None) -> int:
    """Run the training in `num_processes` workers; the exit code (0, or 130 after Ctrl-C).

    Inputs are already checked by the caller (`trainers.inputs.check_inputs`). A failed worker
    raises `WorkerFailed` with its one-line error after the hidden work folder is removed.
    `module` is the workers' entry point (``persona_eval.trainers.<kind>``; tests give their own).
    """
    if not use_cpu:
        import torch

        gpus = torch.cuda.device_count()
        if num_processes > gpus:
            raise UsageError(f"--num-processes {num_processes}: only {gpus} GPU(s) here (one process per GPU); "
                             "lower it, or set device: cpu in the training config")
    control = Path(tempfile.mkdtemp(prefix="persona-eval-train-"))
    env = dict(os.environ, **{CONTROL_ENV: str(control)})
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "true"
        # accelerate's torchrun path ignores --num_cpu_threads_per_process and torchrun would use 1.
        env["OMP_NUM_THREADS"] = str(_threads_per_process(num_processes))
    cmd = [sys.executable, "-m", "persona_eval.trainers.distributed",
           *launch_arguments(num_processes, module or f"persona_eval.trainers.{kind}",
                             worker_argv(command, options))]
    keep_control = False
    try:
        returncode = _supervise(cmd, env, control)
        if returncode == 0:
            return 130 if (control / INTERRUPTED_FILE).exists() else 0
        if not resume:
            shutil.rmtree(partial_dir(out), ignore_errors=True)
        if (control / STOP_FILE).exists() and not list(control.glob("error-rank*.json")):
            return 130  # stopped at once by a second Ctrl-C
        message, code, keep_control = _failure(control, num_processes, returncode)
        raise WorkerFailed(message, code)
    finally:
        if not keep_control:
            shutil.rmtree(control, ignore_errors=True)


def _supervise(cmd: list[str], env: dict[str, str], control: Path) -> int:
    """Run the launcher in its own session; Ctrl-C asks the workers to stop, a second one ends them."""
    process = subprocess.Popen(cmd, env=env, start_new_session=True)
    presses = 0
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            presses += 1
            if presses == 1:
                (control / STOP_FILE).write_text("ctrl-c", encoding="utf-8")
                print("\nStopping all processes after this step and saving (Ctrl-C again to stop at once, "
                      "without saving)...", file=sys.stderr, flush=True)
            else:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


def _failure(control: Path, num_processes: int, returncode: int) -> tuple[str, int, bool]:
    """(one-line message, exit code, keep the control folder) for a failed launch."""
    errors = []
    for path in control.glob("error-rank*.json"):
        try:
            errors.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    if errors:
        # The first to fail is the cause; the others mostly fail because it left.
        first = min(errors, key=lambda e: (e.get("time", 0), e.get("rank", 0)))
        message = f"training failed on rank {first['rank']} of {num_processes}: {first['message']}"
        if first.get("traceback"):
            message += f" (traceback: {first['traceback']})"
        return message, int(first.get("exit_code") or 1), bool(first.get("traceback"))
    launcher = {}
    if (control / LAUNCHER_FILE).exists():
        launcher = json.loads((control / LAUNCHER_FILE).read_text(encoding="utf-8"))
    code = launcher.get("exitcode", returncode)
    where = f"rank {launcher['rank']} of {num_processes}" if "rank" in launcher else "a worker"
    if isinstance(code, int) and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"training failed: {where} was killed by {name} (out of memory?)", 1, False
    return f"training failed: {where} exited with code {code} and left no message", 1, False


# -- the launcher process ---------------------------------------------------------------------


def _launcher_main(argv: list[str]) -> None:
    """``python -m persona_eval.trainers.distributed ACCELERATE_LAUNCH_ARGS``: accelerate launch, quietly.

    accelerate and torch's elastic agent report a failed worker with a traceback and a banner;
    the worker has already left its own one-line error, so here a failure is only an exit code.
    """
    import logging

    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = launch_command_parser().parse_args(argv)
    # This process only starts and watches the workers; their own logging is untouched.
    logging.disable(logging.ERROR)
    try:
        launch_command(args)
    except ChildFailedError as exc:
        failed_rank, failure = exc.get_first_failure()
        control = control_dir()
        if control is not None:
            (control / LAUNCHER_FILE).write_text(json.dumps({"rank": failed_rank, "exitcode": failure.exitcode}),
                                                 encoding="utf-8")
        code = failure.exitcode
        sys.exit(code if isinstance(code, int) and 0 < code < 256 else 1)


if __name__ == "__main__":
    _launcher_main(sys.argv[1:])
