"""The hook specifications (`hookimpl`, `hookspec` and every hook): the stable import path for plugins.

They live in `persona_eval.contracts.hookspecs`; third-party plugins import them from here
(``from persona_eval.hookspecs import ...``), so this path never moves.
"""

from persona_eval.contracts.hookspecs import *  # noqa: F403
from persona_eval.contracts.hookspecs import __all__  # noqa: F401
