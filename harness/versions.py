"""This package's version and the installed versions of the libraries that shape results.

`__version__` is kept here, low in the import graph (see the comment by it). `package_versions`
reads persona-eval, torch, transformers, prometheus-eval, pluggy, peft, trl and any `extra`
names from the installed metadata (None for one that is missing); a run records them in its
``config.json``, a training in the adapter's ``metadata.json``.
"""

from __future__ import annotations

from typing import Sequence

# This package's version (also `persona_eval.__version__`); kept here, at the bottom of the
# import graph, so any module can name it without importing the package's lazy entry points.
__version__ = "0.1.0"


def package_versions(extra: Sequence[str] = ()) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["persona-eval", "torch", "transformers", "prometheus-eval", "pluggy", "peft", "trl", *extra]
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
