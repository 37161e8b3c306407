"""Our strategies reproduce the paper's model inputs exactly, on every released test item.

The released outputs (../shared/data/paper-outputs) hold, per dataset, the exact strings the
paper fed its models. After `import-outputs` recovers questions and personas, our `pt`
strategy must give the PT_dpo inputs ("Prompt: q\\nPersona: p\\nResponse:"), `inline` the
standard-DPO inputs ("Prompt: q I am ...\\nResponse:", the persona's "The user is" turned
into " I am") and `baseline` the no-persona inputs, for all 499 BeaverTails and 500
Anthropic HHH items, gold and retrieved, chosen and rejected personas.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persona_eval.plugins.commands.import_outputs import import_paper_outputs
from persona_eval.rendering.prompts import first_person, render_input
from persona_eval.taskfile.loading import load_task

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "paper-outputs"
DATASETS = {"beavertails": 499, "hhh": 500}
KINDS = {"gold-chosen": ("gold", "chosen"), "gold-rejected": ("gold", "rejected"),
         "retr-chosen": ("retr", "chosen"), "retr-rejected": ("retr", "rejected")}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    if not SHARED_DATA.exists():
        pytest.skip(f"shared paper outputs not found at {SHARED_DATA}")
    out = tmp_path_factory.mktemp("paper-import")
    manifest = import_paper_outputs(SHARED_DATA, out)
    return SHARED_DATA, out, manifest


def _persona(example, kind: str) -> str:
    source, split = KINDS[kind]
    return example.persona_for(split) if source == "gold" else example.extra[f"{split}_persona_retrieved"]


def _released(folder: Path, name: str) -> list[str]:
    return [row["prompt"] for row in json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))]


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_released_input_is_reproduced(imported, dataset):
    shared, out, _ = imported
    task = load_task(out / f"pe_paper_{dataset}.yaml")
    examples = task.load("test")
    assert len(examples) == DATASETS[dataset]
    prompts = task.spec.prompts
    folder = shared / dataset
    mismatches = []
    for kind in KINDS:
        for model, strategy in (("pt_dpo", "pt"), ("dpo", "inline")):
            released = _released(folder, f"{model}__{kind}")
            assert len(released) == len(examples)
            for example, text in zip(examples, released):
                persona = _persona(example, kind)
                assert persona.strip(), f"{dataset} {example.id}: empty {kind} persona"
                if render_input(prompts, strategy, example, persona) != text:
                    mismatches.append((f"{model}__{kind}", example.id))
    for example, text in zip(examples, _released(folder, "dpo__none")):
        if render_input(prompts, "baseline", example, "") != text:
            mismatches.append(("dpo__none", example.id))
    assert mismatches == [], f"{len(mismatches)} inputs differ, first: {mismatches[:5]}"


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_inline_is_the_papers_first_person_rule(imported, dataset):
    """Independently of the released strings: the paper's code built the inline input as
    f"Prompt: {q} {persona.replace('The user is', 'I am')}\\nResponse:"; ours must agree for every persona."""
    shared, out, _ = imported
    examples = load_task(out / f"pe_paper_{dataset}.yaml").load("test")
    seen_other_form = 0
    for example in examples:
        for kind in KINDS:
            persona = _persona(example, kind)
            seen_other_form += not persona.startswith("The user is")
            assert first_person(persona) == " " + persona.replace("The user is", "I am"), (example.id, kind)
    # Some released personas do not start with "The user is" ("The user prefers ...", refusals):
    # the rule then only adds the space, and that case is exercised here.
    assert seen_other_form > 0


def test_hhh_prompts_are_kept_verbatim(imported):
    shared, out, _ = imported
    examples = load_task(out / "pe_paper_hhh.yaml").load("test")
    assert all(e.prompt.startswith("Human:") for e in examples)
    released = _released(shared / "hhh", "dpo__none")
    assert [f"Prompt: {e.prompt}\nResponse:" for e in examples] == released


def test_manifest_reports_every_file_reproduced(imported):
    _, out, manifest = imported
    assert json.loads((out / "models.json").read_text()) == manifest
    assert [t["task"] for t in manifest["tasks"]] == ["pe_paper_beavertails", "pe_paper_hhh"]
    for task in manifest["tasks"]:
        assert len(task["models"]) == 9
        for entry in task["models"]:
            check = entry["render_check"]
            assert check == {"exact": DATASETS[task["task"].removeprefix("pe_paper_")],
                             "total": DATASETS[task["task"].removeprefix("pe_paper_")], "first_mismatch": None}, entry["label"]
