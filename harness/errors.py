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
