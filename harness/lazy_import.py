"""`LazyModule`: a module bound at import time but imported on its first attribute access.

Every command, `persona-eval --help` included, imports all plugin modules (to collect their
commands); a plugin that needs numpy or asyncio only when it runs binds
``np = LazyModule("numpy")`` instead of importing it at the top.
"""

from __future__ import annotations

from typing import Any


class LazyModule:
    """A module imported on its first attribute access.

    Every command, `persona-eval --help` included, imports all plugin modules (to collect
    their commands); a plugin that needs numpy or asyncio only when it runs binds
    ``np = LazyModule("numpy")`` instead of importing it at the top.
    """

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            import importlib

            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)
