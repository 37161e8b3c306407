"""Errors that reach the user as one line and an exit code.

`UsageError` (exit 2) is for bad input: task files, data files, names, options.
`RunError` (exit 1) is for failures while running: a backend that breaks, a server
that never answers. Both carry the place (file:line, item id) in their message.
"""

from __future__ import annotations

import re


class PersonaEvalError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(_one_short_line(str(message), where))


#: The longest error message printed (the place before it is kept whole, up to half as long again);
#: keep in step with `limits.ERROR_LINE_CHARS` (this module sits below it).
MAX_ERROR_CHARS = 300


def _cut_middle(text: str, width: int, head_share: float = 0.75) -> str:
    if len(text) <= width:
        return text
    head = int((width - 5) * head_share)
    return f"{text[:head]} ... {text[len(text) - (width - 5 - head):]}"


def _cut_word(word: str) -> str:
    """An over-long word (a path, a pasted value) as its start and its end (a path's end names the file)."""
    return f"{word[:12]}...{word[-(_WORD_CHARS - 15):]}"


def short_line(message: str) -> str:
    """Any message as one line of at most MAX_ERROR_CHARS characters (for errors that are not ours, e.g. click's)."""
    return _one_short_line(str(message), None)


def _one_short_line(message: str, where: str | None) -> str:
    """``where: message`` on one line: the message at most MAX_ERROR_CHARS characters, the place whole.

    User text echoed in a message (a 5,000-character option value, a persona with line
    breaks) must not flood the terminal or break the one-line contract: line breaks become
    spaces, each over-long word (a path, a pasted value) keeps its start and end, and a
    message still too long keeps its start (what failed) and its end (the hint). The place
    (file:line, item) is kept whole unless it is itself absurdly long (MAX_ERROR_CHARS / 2).
    """
    if "\n" in message or "\r" in message:
        message = " ".join(message.split())
    if where is not None and ("\n" in where or "\r" in where):
        where = " ".join(where.split())
    if len(message) > MAX_ERROR_CHARS:
        message = _cut_middle(_LONG_WORD.sub(lambda m: _cut_word(m.group(0)), message), MAX_ERROR_CHARS, 0.8)
    if where:
        return f"{_cut_middle(where, MAX_ERROR_CHARS // 2, head_share=0.25)}: {message}"
    return message


_WORD_CHARS = 80
_LONG_WORD = re.compile(r"\S{%d,}" % (_WORD_CHARS + 1))


class UsageError(PersonaEvalError):
    """Bad input: the user can fix it by changing a file, a name or an option."""

    exit_code = 2


class RunError(PersonaEvalError):
    """Something failed while running."""

    exit_code = 1


class UnknownNameError(UsageError):
    """A name that no plugin registered; the message suggests close matches."""


def plugin_call(what: str, function, *args, **kwargs):
    """Call into a plugin (a backend's `generate`, a judge's `compare`, a constructor).

    Our own errors pass through; anything else a plugin raises becomes a `RunError`
    naming `what` (e.g. "generator 'x:y' (plugin 'pkg')"), so a broken plugin fails the
    run in one line instead of a traceback. Nothing it did not return is cached.
    """
    try:
        return function(*args, **kwargs)
    except PersonaEvalError:
        raise
    except Exception as exc:  # noqa: BLE001 - any plugin failure, reported with its origin
        detail = " ".join(str(exc).split())
        detail = detail[:300] + ("..." if len(detail) > 300 else "")
        raise RunError(f"{what} failed: {type(exc).__name__}{': ' + detail if detail else ''}") from exc
