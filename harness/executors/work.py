"""What a stage asks a remote worker to do, as plain data: which generator or judge to build, and how.

A worker receives a `GenerateWork` or `JudgeWork` (both picklable, no live objects), builds the
generator or judge from it through the very factories this process used
(`persona_eval.contracts.factories`: the registry, never a plugin module by name), and answers
batches of requests. Requests and results travel as JSON text, one per row, so they cross Ray's
Arrow blocks unchanged (floats survive JSON's round trip exactly); `identity_hash` lets the driver
check that every worker built exactly what it built itself.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from persona_eval.contracts.records import GenParams, GenRequest, GenResult, PairRequest, Verdict
from persona_eval.hashing import stable_hash

# Environment a worker takes over from the driver, so it finds the same cache folder, models and hub settings.
FORWARDED_ENV_PREFIXES = ("PERSONA_EVAL_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_")


def driver_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def identity_hash(identity: Any) -> str:
    return stable_hash(identity, 16)


def request_to_dict(request: GenRequest) -> dict[str, Any]:
    return asdict(request)


def request_from_dict(data: Mapping[str, Any]) -> GenRequest:
    data = dict(data)
    params = dict(data.pop("params"))
    params["stop"] = tuple(params.get("stop") or ())
    return GenRequest(**data, params=GenParams(**params))


def result_to_dict(result: GenResult) -> dict[str, Any]:
    return asdict(result)


def result_from_dict(data: Mapping[str, Any]) -> GenResult:
    return GenResult(**data)


@dataclass(frozen=True)
class GenerateWork:
    """Generate with the generator of `spec` (generation stage, persona inference)."""

    spec: str
    option: str = "--model"
    kind = "generate"

    def build(self):
        from persona_eval.contracts.factories import build_generator

        return build_generator(self.spec, option=self.option)

    def identity(self, built) -> Any:
        return built.identity()

    def run(self, built, inputs: list[GenRequest]) -> list[GenResult]:
        return list(built.generate(inputs))

    def describe(self) -> str:
        return f"generator {self.spec!r}"

    # Driver side: what crosses the wire. Inputs of the generate stage are `GenRequest`s.
    def encode_input(self, item: GenRequest) -> dict[str, Any]:
        return request_to_dict(item)

    def decode_input(self, data: Mapping[str, Any]) -> GenRequest:
        return request_from_dict(data)

    def encode_output(self, output: GenResult) -> dict[str, Any]:
        return result_to_dict(output)

    def decode_output(self, data: Mapping[str, Any]) -> GenResult:
        return result_from_dict(data)


@dataclass(frozen=True)
class JudgeWork:
    """Compare with judge `name` on `model`, for the task whose resolved spec is `task` (judge stage).

    The judge needs its task (its ``judge`` block: generation settings, options, attempts): the
    worker rebuilds it from the resolved spec, exactly as `persona-eval judge RUN_DIR` rebuilds a
    run's task from its ``config.json``. Inputs are the stage's (record key, `PairRequest`) pairs.
    """

    name: str
    model: str
    task: dict[str, Any] = field(hash=False, compare=False)
    task_path: str = ""
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    kind = "judge"

    def build(self):
        from pathlib import Path

        from persona_eval.contracts.factories import build_judge
        from persona_eval.taskfile.loading import Task
        from persona_eval.taskfile.schema import TaskSpec

        task = Task(spec=TaskSpec.model_validate(self.task), path=Path(self.task_path or "task.yaml"), raw=self.task)
        return build_judge(self.name, self.model, task, self.seed, **self.options)

    def identity(self, built) -> Any:
        return built.identity()

    def run(self, built, inputs: list[PairRequest]) -> list[Verdict]:
        return list(built.compare(inputs))

    def describe(self) -> str:
        return f"judge {self.name!r} on {self.model!r}"

    def encode_input(self, item: tuple[Any, PairRequest]) -> dict[str, Any]:
        return asdict(item[1])

    def decode_input(self, data: Mapping[str, Any]) -> PairRequest:
        return PairRequest(**data)

    def encode_output(self, output: Verdict) -> dict[str, Any]:
        return asdict(output)

    def decode_output(self, data: Mapping[str, Any]) -> Verdict:
        return Verdict(**data)


def judge_work(name: str, model: str, task, seed: int, options: Mapping[str, Any] | None = None) -> JudgeWork:
    """The `JudgeWork` of a judge built with ``build_judge(name, model, task, seed, **options)``."""
    return JudgeWork(name=name, model=model, task=task.resolved(), task_path=str(task.path), seed=int(seed),
                     options=dict(options or {}))
