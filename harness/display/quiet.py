"""The quiet switch for the libraries' own progress bars ("Loading weights", GGUF conversion).

`QUIET_ENV` is the Hugging Face libraries' switch, ``HF_HUB_DISABLE_PROGRESS_BARS``.
`quiet_library_progress` sets it for ``--quiet`` unless the user already set it.
`quiet_progress_bars` is what the `hf` generator and the embedded model's conversion call
right before loading: transformers reads the switch only when it is first imported.
"""

from __future__ import annotations

import os

# The Hugging Face libraries' own switch for their progress bars ("Loading weights", ...).
QUIET_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"


def quiet_library_progress() -> None:
    """For --quiet: the library progress bars go too (see `QUIET_ENV`), unless the user set the switch."""
    os.environ.setdefault(QUIET_ENV, "1")


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
