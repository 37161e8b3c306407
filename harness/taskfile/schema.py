"""The schema of a task YAML file, as pydantic models.

Unknown keys are errors (a typo must never be silently ignored). Defaults follow the
paper: the persona-tailoring input "Prompt: ...\\nPersona: ...\\nResponse:", greedy
decoding, a Prometheus pairwise judge on Personalization and Quality.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

SPLITS = ("chosen", "rejected")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HubDataset(Strict):
    path: str = Field(description="Hugging Face dataset id")
    name: str | None = Field(default=None, description="dataset config")
    revision: str | None = None


class DatasetSpec(Strict):
    """Where the items come from: local files (relative to the YAML) and/or a hub dataset."""

    test: str = Field(description="file path, or split name of the hub dataset")
    train: str | None = None
    fewshot: str | None = None
    hub: HubDataset | None = None
    data_dir_env: str | None = Field(
        default=None, description="environment variable naming a local copy of the hub dataset"
    )


class FieldMap(Strict):
    id: str | None = "id"
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    chosen_persona: str = "chosen_persona"
    rejected_persona: str = "rejected_persona"
    # Precomputed retrieved personas shipped with a dataset (the `precomputed` persona source).
    chosen_persona_retrieved: str | None = None
    rejected_persona_retrieved: str | None = None


class GenerationSpec(Strict):
    max_new_tokens: int = Field(default=256, gt=0, le=32768)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    # Settings of the paper's pipeline (its inference's min_new_tokens=10, prometheus-eval's
    # repetition_penalty=1.03). Absent = not set: the backend's own behaviour.
    min_new_tokens: int | None = Field(default=None, ge=0, le=32768)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)

    @model_serializer(mode="wrap")
    def _unset_stays_out(self, handler):
        # Left unset they stay out of the dump, so the task hash (and with it every run key
        # and cache entry) of a task that does not use them is what it was before they existed.
        data = handler(self)
        for key in ("min_new_tokens", "repetition_penalty"):
            if isinstance(data, dict) and data.get(key) is None:
                data.pop(key, None)
        return data


DEFAULT_PROMPTS = {
    "baseline": "Prompt: {{ prompt }}\nResponse:",
    "inline": "Prompt: {{ prompt }}{{ persona | first_person }}\nResponse:",
    "pt": "Prompt: {{ prompt }}\nPersona: {{ persona }}\nResponse:",
    # pt_fs: exemplars (each rendered with `pt` and followed by its chosen response), then the query.
    "pt_fs": "{% for shot in shots %}{{ shot.input }} {{ shot.response }}\n\n{% endfor %}{{ query }}",
}


class Criterion(Strict):
    instruction: str = Field(description="Jinja template with {{ prompt }} and {{ persona }}")
    rubric: str


DEFAULT_CRITERIA = {
    "personalization": Criterion(
        instruction=(
            "Write a response to the prompt below that is tailored to the persona of the user asking.\n"
            "Prompt: {{ prompt }}\nPersona: {{ persona }}"
        ),
        rubric="[Does the response answer the prompt and align with the needs and preferences in the persona?]",
    ),
    "quality": Criterion(
        instruction="Write a response to the prompt below.\nPrompt: {{ prompt }}",
        rubric="[Is the response high-quality: helpful, correct, clear and harmless?]",
    ),
}


class JudgeSpec(Strict):
    name: str = "prometheus"
    generation: GenerationSpec = Field(default_factory=lambda: GenerationSpec(max_new_tokens=256))
    # At most 11: the paper's judge (prometheus-eval) asks once and retries up to 10 times.
    max_attempts: int = Field(default=2, ge=1, le=11)
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the judge plugin")
    criteria: dict[str, Criterion] = Field(default_factory=lambda: dict(DEFAULT_CRITERIA))

    @field_validator("criteria")
    @classmethod
    def _has_both(cls, value: dict[str, Criterion]) -> dict[str, Criterion]:
        missing = {"personalization", "quality"} - set(value)
        if missing:
            raise ValueError(f"criteria must define personalization and quality (missing: {', '.join(sorted(missing))})")
        return value


class FewShotSpec(Strict):
    source: Literal["fewshot", "train"] = "train"
    k: int = Field(default=2, ge=0, le=64)


class RetrievalSpec(Strict):
    retriever: str = "dense"
    k: int = Field(default=1, ge=1, le=100)
    options: dict[str, Any] = Field(default_factory=dict)


class Strategies(Strict):
    test: str = "pt"
    baseline: str = "baseline"


class Defaults(Strict):
    model: str = "hf:embedded"
    baseline: str | None = Field(default=None, description="defaults to the test model")
    judge_model: str = "hf:embedded"
    limit: int | None = Field(default=None, ge=0, description="items evaluated when --limit is not given (0 = all)")


class ReportSpec(Strict):
    """How the report presents the results; never what is measured.

    ``headline: paper`` leads with the paper's dPQ (counted wins, ties excluded);
    ``weighted`` leads with the probability-weighted dPQ (from the judge's P(A)). Both are
    always computed and shown; this only picks the number the final line leads with.
    """

    headline: Literal["paper", "weighted"] = "paper"


class TaskSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=80)
    version: int | str = 1
    description: str = ""
    dataset: DatasetSpec
    fields: FieldMap = Field(default_factory=FieldMap)
    splits: list[Literal["chosen", "rejected"]] = Field(default_factory=lambda: list(SPLITS))
    persona_source: str = "gold"
    persona_source_options: dict[str, Any] = Field(default_factory=dict)
    retrieval: RetrievalSpec = Field(default_factory=RetrievalSpec)
    prompts: dict[str, str] = Field(default_factory=dict)
    system_prompt: str | None = None
    response_prefix: str = Field(
        default="", description="text the reply starts with; a Jinja template with {{ prompt }} and {{ persona }}"
    )
    strategies: Strategies = Field(default_factory=Strategies)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    few_shot: FewShotSpec = Field(default_factory=FewShotSpec)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    defaults: Defaults = Field(default_factory=Defaults)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @model_validator(mode="after")
    def _prompts_complete(self) -> "TaskSpec":
        self.prompts = {**DEFAULT_PROMPTS, **self.prompts}
        return self

    @field_validator("splits")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one of: chosen, rejected")
        return value
