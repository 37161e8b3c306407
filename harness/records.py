"""The data types that flow between stages (Example, GenRequest, PairRequest, Verdict, ...): the stable import path for plugins.

They live in `persona_eval.contracts.records`; third-party plugins import them from here
(``from persona_eval.records import ...``), so this path never moves.
"""

from persona_eval.contracts.records import *  # noqa: F403
from persona_eval.contracts.records import __all__  # noqa: F401
