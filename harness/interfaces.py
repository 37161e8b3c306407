"""The plugin interfaces (Generator, Judge, PersonaSource, Retriever): the stable import path for plugins.

They live in `persona_eval.contracts.interfaces`; third-party plugins import them from here
(``from persona_eval.interfaces import ...``), so this path never moves.
"""

from persona_eval.contracts.interfaces import *  # noqa: F403
from persona_eval.contracts.interfaces import __all__  # noqa: F401
