"""A deterministic, call-counting generator backend for the judging tests (`scripted:MODE`).

It is a real `Generator` registered through the same hook as every backend, so runs go
through the whole harness (cache, JSON Lines, judges, metrics). What it answers depends
on the spec's model part:

- ``scripted:writer``: answers generation prompts; a persona-tailored input ("Persona:")
  gets a longer answer than a plain one, so test and baseline responses differ;
- ``scripted:longer``: a position-consistent judge that prefers the longer response;
- ``scripted:first``: always picks position A (every pair a tie);
- ``scripted:silent``: never gives a verdict;
- ``scripted:flaky``: gives a verdict only when re-asked;
- ``scripted:shorter``: prefers the shorter response.

Option ``probs=true`` adds `choice_probs` (P(A) from the same rule). Every request is
logged in ``ScriptedGenerator.calls``; ``ScriptedGenerator.kill_after = N`` makes the
backend raise `Killed` once N judge requests have been answered (a simulated crash).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import ClassVar

from persona_eval.contracts import plugin_manager, registry
from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenResult

_SECTIONS = (
    re.compile(r"## Response A\n(.*?)\n\n## Response B\n(.*?)\n\nJudge by", re.S),  # gpt-4o judge
    re.compile(r"###Response A:\n(.*?)\n\n###Response B:\n(.*?)\n\n###Score Rubric", re.S),  # prometheus
)


class Killed(BaseException):
    """A simulated crash: not an Exception, so nothing on the way catches it."""


def _responses(prompt: str) -> tuple[str, str] | None:
    for pattern in _SECTIONS:
        found = pattern.search(prompt)
        if found:
            return found.group(1), found.group(2)
    return None


class ScriptedGenerator(Generator):
    calls: ClassVar[list[tuple[str, str]]] = []
    kill_after: ClassVar[int | None] = None
    preferred_batch_size = 4
    # concurrency bookkeeping, for the test of concurrent judge calls
    _lock: ClassVar[threading.Lock] = threading.Lock()
    active: ClassVar[int] = 0
    peak_active: ClassVar[int] = 0
    delay_s: ClassVar[float] = 0.0

    def __init__(self, model: str, probs: bool = False):
        self.mode = model
        self.probs = bool(probs)

    @classmethod
    def reset(cls) -> None:
        cls.calls = []
        cls.kill_after = None
        cls.active = cls.peak_active = 0
        cls.delay_s = 0.0
        cls.max_concurrent_calls = 1

    @classmethod
    def judge_calls(cls, mode: str | None = None) -> list[str]:
        return [p for m, p in cls.calls if m != "writer" and (mode is None or m == mode)]

    def identity(self):
        return {"backend": "scripted", "model": self.mode, "probs": self.probs}

    def _preferred(self, prompt: str) -> str | None:
        pair = _responses(prompt)
        if pair is None:
            return None
        a, b = pair
        if self.mode == "first":
            return "A"
        if self.mode == "shorter":
            return "A" if len(a) < len(b) else "B"
        return "A" if len(a) >= len(b) else "B"

    def _answer(self, request) -> str:
        prompt = request.prompt
        if self.mode == "writer":
            words = 30 if "Persona:" in prompt else 12
            return " ".join(["tailored" if "Persona:" in prompt else "plain"] * words)
        prometheus = "###Score Rubric" in prompt
        reasked = "Reminder:" in prompt or request.params.temperature > 0
        if self.mode == "silent" or (self.mode == "flaky" and not reasked):
            return "Both responses have merits and I cannot decide."
        choice = self._preferred(prompt)
        return f"Feedback on both. [RESULT] {choice}" if prometheus else f"A has this, B has that.\nVerdict: {choice}"

    def generate(self, requests):
        with ScriptedGenerator._lock:
            ScriptedGenerator.active += 1
            ScriptedGenerator.peak_active = max(ScriptedGenerator.peak_active, ScriptedGenerator.active)
        try:
            if ScriptedGenerator.delay_s:
                time.sleep(ScriptedGenerator.delay_s)
            return self._generate(requests)
        finally:
            with ScriptedGenerator._lock:
                ScriptedGenerator.active -= 1

    def _generate(self, requests):
        out = []
        for request in requests:
            if self.mode != "writer" and ScriptedGenerator.kill_after is not None:
                if len(self.judge_calls()) >= ScriptedGenerator.kill_after:
                    raise Killed()
            ScriptedGenerator.calls.append((self.mode, request.prompt))
            out.append(GenResult(text=self._answer(request), finish_reason="stop", output_tokens=10))
        return out

    def choice_probs(self, requests, choices):
        if not self.probs:
            return None
        out = []
        for request in requests:
            if self.mode == "silent":
                out.append({"A": 0.5, "B": 0.5})
                continue
            choice = self._preferred(request.prompt)
            out.append({"A": 0.8, "B": 0.2} if choice == "A" else {"A": 0.3, "B": 0.7})
        return out


class _ScriptedPlugin:
    @hookimpl
    def register_generators(self, register):
        register("scripted", ScriptedGenerator, description="test backend for the judging tests")


def install() -> object:
    plugin = _ScriptedPlugin()
    plugin_manager.get_plugin_manager().register(plugin, name="scripted-test")
    registry.reset_registries()
    ScriptedGenerator.reset()
    return plugin


def uninstall(plugin) -> None:
    from persona_eval.contracts.factories import close_generators

    close_generators()
    plugin_manager.get_plugin_manager().unregister(plugin)
    registry.reset_registries()
    ScriptedGenerator.reset()


# ---- the paper's BeaverTails outputs as a task -------------------------------------------

PAPER_TASK_YAML = """\
# Test-only task over the paper's BeaverTails outputs (written at test time).
name: paper-beavertails-test
version: 1
description: BeaverTails test prompts with gold personas, parsed from the paper's PT_dpo inputs.
dataset:
  test: test.jsonl
splits: [chosen, rejected]
persona_source: gold
strategies:
  test: pt
  baseline: inline
judge:
  name: prometheus
  options: {options}
defaults:
  model: hf:embedded
  judge_model: hf:embedded
"""


def _split_pt_input(text: str) -> tuple[str, str]:
    """'Prompt: P\\nPersona: Q\\nResponse:' -> (P, Q)."""
    assert text.startswith("Prompt: ") and text.endswith("\nResponse:"), text[:80]
    prompt, _, persona = text[len("Prompt: ") : -len("\nResponse:")].rpartition("\nPersona: ")
    return prompt, persona


def write_paper_task(folder, paper_outputs, *, judge_options: str = "{}") -> Path:
    """A task YAML + test.jsonl in `folder` built from the paper's PT_dpo gold-persona inputs."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bt = Path(paper_outputs) / "beavertails"
    chosen = json.loads((bt / "pt_dpo__gold-chosen.json").read_text())
    rejected = json.loads((bt / "pt_dpo__gold-rejected.json").read_text())
    with open(folder / "test.jsonl", "w", encoding="utf-8") as handle:
        for index, (c, r) in enumerate(zip(chosen, rejected)):
            prompt, chosen_persona = _split_pt_input(c["prompt"])
            prompt_r, rejected_persona = _split_pt_input(r["prompt"])
            assert prompt == prompt_r
            handle.write(json.dumps({"id": f"bt-{index:03d}", "prompt": prompt, "chosen_persona": chosen_persona,
                                     "rejected_persona": rejected_persona}) + "\n")
    path = folder / "task.yaml"
    path.write_text(PAPER_TASK_YAML.format(options=judge_options))
    return path
