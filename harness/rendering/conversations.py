"""Flattening conversation-style fields (lists of chat messages) into plain text.

Preference data such as Anthropic HH stores turns as ``[{"role": ..., "content": ...}]``;
the harness works on text, so turns become "Human: ..." / "Assistant: ..." lines.
"""

from __future__ import annotations

from typing import Any

from persona_eval.errors import UsageError

ROLE_NAMES = {"user": "Human", "human": "Human", "assistant": "Assistant", "gpt": "Assistant", "system": "System"}


def flatten_conversation(messages: list[Any], *, where: str = "") -> str:
    lines = []
    for turn in messages:
        if isinstance(turn, str):
            lines.append(turn)
            continue
        if not isinstance(turn, dict):
            raise UsageError(f"conversation turns must be objects or strings, got {type(turn).__name__}", where=where)
        role = str(turn.get("role") or turn.get("from") or "user").lower()
        content = turn.get("content", turn.get("value", ""))
        if isinstance(content, list):  # multi-part content: keep the text parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        lines.append(f"{ROLE_NAMES.get(role, role.title())}: {content}")
    return "\n\n".join(lines)
