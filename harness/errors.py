"""Errors that reach the user as one line and an exit code.

`UsageError` (exit 2) is for bad input: task files, data files, names, options.
`RunError` (exit 1) is for failures while running: a backend that breaks, a server
that never answers. Both carry the place (file:line, item id) in their message.
"""

from __future__ import annotations


class PersonaEvalError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


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
