"""What the persona sources share: `normalize_prompt`, the form two prompts are compared in.

Unicode NFKC, case-folded, whitespace runs collapsed to one space. The `retrieved` source uses
it for leak-freedom: a training item whose prompt equals the test prompt in this form is never
the source of that test item's persona.
"""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")


def normalize_prompt(text: str) -> str:
    """The form two prompts are compared in: Unicode-normalised, case-folded, single spaces."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()
