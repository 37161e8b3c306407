"""What reaches stderr besides our progress display: ``--quiet``, our one-line notices, and the libraries' output.

`quiet_library_progress` is what ``--quiet`` calls (run, judge, infer, train): it marks the process
quiet, so our own notices (`step`) go too, and sets the Hugging Face libraries' switch `QUIET_ENV`
(``HF_HUB_DISABLE_PROGRESS_BARS``) unless the user set it. Warnings and errors are never quieted.

`step` prints one line of ours for a slow one-time step: ``preparing ... done in 24 s``.

`library_bars_off` turns the tqdm bars of transformers and huggingface_hub ("Loading weights",
"Writing model shards", downloads, the GGUF conversion) off around one of our calls into them and
restores them afterwards, so our display is the only one. `library_output_to` reroutes what transformers
logs, and the Python warnings raised, inside a block to one of our loggers at INFO (shown with ``-v``):
it is only for work of ours that no user can act on (converting the shipped embedded model); a user's
own model is loaded with its warnings in plain sight.

`quiet_progress_bars` turns transformers' bars off for good when the switch is set, for code that calls
transformers outside these wrappers.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager
from typing import Iterator

# The Hugging Face libraries' own switch for their progress bars ("Loading weights", ...).
QUIET_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"

_quiet = False


def quiet_library_progress() -> None:
    """For --quiet: our notices go, and the library bars too (see `QUIET_ENV`), unless the user set the switch."""
    set_quiet(True)
    os.environ.setdefault(QUIET_ENV, "1")


def set_quiet(quiet: bool) -> None:
    """Mark this process quiet or not; the CLI resets it per invocation, so an earlier in-process --quiet cannot linger."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


@contextmanager
def step(text: str) -> Iterator[None]:
    """``TEXT ... done in N s`` on stderr around a slow step of ours; nothing when quiet.

    The line is written in two parts. On a terminal our rich display holds stderr and prints a part
    line when flushed, so the ending then comes on the next line; anywhere else it is one line.
    An exception ends it with "failed" (or "interrupted"), so the error that follows has a line of its own.
    """
    stream = None if _quiet else sys.stderr
    started = time.monotonic()
    if stream is not None:
        stream.write(f"{text} ... ")
        stream.flush()
    try:
        yield
    except BaseException as exc:
        if stream is not None:
            stream.write("interrupted\n" if isinstance(exc, KeyboardInterrupt) else "failed\n")
            stream.flush()
        raise
    if stream is not None:
        stream.write(f"done in {time.monotonic() - started:.0f} s\n")
        stream.flush()


@contextmanager
def library_bars_off() -> Iterator[None]:
    """The tqdm bars of transformers, huggingface_hub and transformers' GGUF reader off for the block, then as they were.

    A user who set ``HF_HUB_DISABLE_PROGRESS_BARS=0`` asked for the bars: they stay.
    """
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    if hub_constants.HF_HUB_DISABLE_PROGRESS_BARS is False:
        yield
        return
    transformers_on = transformers_logging.is_progress_bar_enabled()
    hub_on = not are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # huggingface_hub's go with it
    try:
        with _gguf_reader_bar_off():
            yield
    finally:
        if transformers_on:
            transformers_logging.enable_progress_bar()  # turns huggingface_hub's back on as well
        if hub_on != (not are_progress_bars_disabled()):
            (enable_progress_bars if hub_on else disable_progress_bars)()


@contextmanager
def _gguf_reader_bar_off() -> Iterator[None]:
    # transformers' GGUF reader draws its "Converting and de-quantizing GGUF tensors" bar with
    # tqdm directly, past transformers' switch; its module-level `tqdm` is the only handle on it.
    try:
        import transformers.modeling_gguf_pytorch_utils as reader
    except ImportError:  # a transformers without the GGUF reader draws no such bar
        reader = None
    original = getattr(reader, "tqdm", None)
    if original is None:
        yield
        return

    def silent_tqdm(*args, **kwargs):
        kwargs["disable"] = True
        return original(*args, **kwargs)

    reader.tqdm = silent_tqdm
    try:
        yield
    finally:
        reader.tqdm = original


class _Forward(logging.Handler):
    """Hands a third party's log records to one of our loggers at INFO, naming the source."""

    def __init__(self, target: logging.Logger, source: str):
        super().__init__()
        self.target, self.source = target, source

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.target.info("%s %s: %s", self.source, record.levelname.lower(), record.getMessage())
        except Exception:  # noqa: BLE001 - a log line must never break the work it reports on
            self.handleError(record)


@contextmanager
def library_output_to(target: logging.Logger) -> Iterator[None]:
    """transformers' log records and Python warnings raised in the block go to `target` at INFO, not to stderr.

    Only for work of ours a user cannot act on: transformers' own handler writes straight to stderr,
    so the records are rerouted there, and restored afterwards, rather than its verbosity changed.
    Errors raised as exceptions are untouched.
    """
    library = logging.getLogger("transformers")
    handlers, propagate = library.handlers[:], library.propagate
    library.handlers = [_Forward(target, "transformers")]
    library.propagate = False
    with ExitStack() as stack:
        stack.callback(setattr, library, "propagate", propagate)
        stack.callback(setattr, library, "handlers", handlers)
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        try:
            yield
        finally:
            for warning in caught:
                target.info("%s: %s", warning.category.__name__, warning.message)


def quiet_progress_bars() -> bool:
    """Turn transformers' progress bars ("Loading weights", GGUF conversion) off when quiet is asked for.

    transformers reads the switch only when it is first imported; calling this right
    before loading also covers a process that imported it earlier. Returns whether quiet.
    """
    if os.environ.get(QUIET_ENV, "").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    return True
