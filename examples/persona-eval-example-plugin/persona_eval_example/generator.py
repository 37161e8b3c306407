"""The `example/echo` generator: deterministic responses read off the rendered input.

Spec ``example/echo:MODE[,prefix=TEXT]``. MODE ``persona`` answers with the input's
``Persona:`` line (falling back to the prompt when there is none), ``prompt`` with the
``Prompt:`` line (or the whole input). The answer is cut at ``max_new_tokens`` words.
Useful to exercise the whole pipeline without loading a model.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from persona_eval.errors import UsageError
from persona_eval.interfaces import Generator
from persona_eval.records import GenRequest, GenResult

MODES = ("persona", "prompt")


def _field(text: str, label: str) -> str | None:
    # The last match: few-shot inputs repeat the labels and the query comes last.
    found = re.findall(rf"^{label}:[ \t]*(.*)$", text, flags=re.MULTILINE)
    return found[-1].strip() if found else None


class EchoGenerator(Generator):
    preferred_batch_size = 64

    def __init__(self, model: str = "persona", prefix: str = ""):
        if model not in MODES:
            raise UsageError(f"example/echo: unknown mode {model!r}; use one of: {', '.join(MODES)}")
        self.mode = model
        self.prefix = str(prefix)

    def identity(self) -> dict[str, Any]:
        return {"backend": "example/echo", "model": self.mode, "prefix": self.prefix, "version": 1}

    def _answer(self, request: GenRequest) -> str:
        prompt = _field(request.prompt, "Prompt") or request.prompt.strip()
        if self.mode == "persona":
            text = _field(request.prompt, "Persona") or prompt
        else:
            text = prompt
        return f"{self.prefix}{text}"

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        results = []
        for request in requests:
            tokens = self._answer(request).split()
            limit = request.params.max_new_tokens
            finish = "length" if len(tokens) > limit else "stop"
            tokens = tokens[:limit]
            results.append(GenResult(text=" ".join(tokens), finish_reason=finish, output_tokens=len(tokens)))
        return results
