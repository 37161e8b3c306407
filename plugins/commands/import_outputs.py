"""`persona-eval import-outputs DIR --format paper`: the paper's released outputs as a task and `file` models.

The released layout (Balepur et al. 2025) is one folder per dataset of aligned JSON arrays
``<model>__<persona>.json`` of ``{"prompt", "response"}``, where persona is ``none``,
``gold-chosen``, ``gold-rejected``, ``retr-chosen`` or ``retr-rejected``. A persona-tailored
model's prompts read ``Prompt: {q}\\nPersona: {p}\\nResponse:``; a model never trained with
personas got ``Prompt: {q} I am ...\\nResponse:`` (first person), or ``Prompt: {q}\\nResponse:``
with persona ``none``.

The import recovers each test question (from a ``__none`` file, else from a persona-tailored
file) and its four personas (from persona-tailored files; from a first-person file only when
no tailored file has that persona), and writes into OUT_DIR:

- ``<task>.yaml`` + ``<task>/test.jsonl``: a local task of those items, in the schema of the
  paper's hub dataset (``chosen_persona_gold``, ..., ``rejected_persona_retr``), with the judge
  criteria of the matching packaged task (pe_beavertails, pe_anthropic_hhh, pe_mnemonic);
- ``models.json``: per released file a ``file:`` generator spec, the strategy and persona that
  reproduce its inputs, how many inputs our rendering reproduces exactly, and ready
  ``persona-eval run`` commands for the paper's comparisons (PT vs DPO with the same persona,
  and vs the no-persona baseline).

The dataset folder's name says whose judge criteria apply (beavertails; hhh, anthropic_hhh or
"Anthropic HHH"; mnemonic); a folder of any other name is refused unless ``--dataset
beavertails|hhh|mnemonic`` names the dataset, and a ``--dataset`` that contradicts a known folder
name is refused too. Every file (or folder) that is not imported is reported with the reason (a
name outside ``<model>__<persona>.json``, an unknown persona, an unsafe model part such as
``..``, not a ``.json`` file, ...): on stderr by the command, and under ``skipped`` in
``models.json``. A name part is never used to build a path.

The released files are read in place and never copied. Everything is parsed and checked
before anything is written; files are written whole (temporary file, then rename), and an
existing different file in OUT_DIR is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.errors import UsageError

logger = logging.getLogger(__name__)

PERSONA_KINDS = ("gold-chosen", "gold-rejected", "retr-chosen", "retr-rejected")
# persona kind -> (persona source, split, column of the imported data)
KIND_INFO = {
    "gold-chosen": ("gold", "chosen", "chosen_persona_gold"),
    "gold-rejected": ("gold", "rejected", "rejected_persona_gold"),
    "retr-chosen": ("precomputed", "chosen", "chosen_persona_retr"),
    "retr-rejected": ("precomputed", "rejected", "rejected_persona_retr"),
}
_FILE_NAME = re.compile(r"^(?P<model>[A-Za-z0-9][A-Za-z0-9_.\-]*?)__(?P<persona>[A-Za-z0-9_\-]+)\.json$")
_PROMPT = "Prompt: "
_PERSONA = "\nPersona: "
_RESPONSE = re.compile(r"\nResponse:(?P<prefix>[^\n]*)\Z")
# Released dataset folder names -> the packaged task whose judge criteria and prompts apply.
PACKAGED = {"beavertails": "pe_beavertails", "hhh": "pe_anthropic_hhh", "anthropic_hhh": "pe_anthropic_hhh",
            "anthropichhh": "pe_anthropic_hhh", "mnemonic": "pe_mnemonic"}
# `--dataset` values -> the packaged task whose judge criteria apply.
DATASETS = {"beavertails": "pe_beavertails", "hhh": "pe_anthropic_hhh", "mnemonic": "pe_mnemonic"}
_MODEL_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_NAMING = "<model>__<persona>.json"
PAPER_JUDGE_MODEL = "vllm:prometheus-eval/prometheus-7b-v2.0"


@dataclass
class Released:
    """One released file: its name parts, rows and, once classified, how its inputs were made."""

    path: Path
    model: str
    persona: str
    rows: list[dict[str, str]]
    style: str = ""  # "pt", "inline" or "baseline"
    prefix: str = ""  # text after "Response:" (the Mnemonic "<Term> sounds like")
    personas: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.model}__{self.persona}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "dataset"


def _read_released(path: Path) -> list[dict[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"not UTF-8 text (byte {exc.start})", where=str(path)) from None
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise UsageError(f"not valid JSON ({getattr(exc, 'msg', exc)})", where=f"{path}:{line}" if line else str(path)) from None
    if not isinstance(data, list):
        raise UsageError("expected one JSON array of {\"prompt\", \"response\"} objects (the paper's format)", where=str(path))
    for index, row in enumerate(data):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
            raise UsageError("each element must be an object with text fields \"prompt\" and \"response\"",
                             where=f"{path}: element {index}")
    if not data:
        raise UsageError("the file holds no outputs", where=str(path))
    return data


def _split_prompt(text: str, where: str) -> tuple[str, str]:
    """("Prompt: " + body, prefix) of one released input, body without "Prompt: "."""
    match = _RESPONSE.search(text)
    if not text.startswith(_PROMPT) or match is None:
        raise UsageError('input is not of the form "Prompt: ...\\nResponse:"', where=where)
    return text[len(_PROMPT): match.start()], match.group("prefix")


def _first_person_inverse(tail: str) -> str:
    """" I am X" (how an untrained model saw a persona) -> "The user is X"."""
    if tail.startswith(" I am"):
        return "The user is" + tail[len(" I am"):]
    return tail.strip()


def _shown(name: str) -> str:
    """A file name as printed: as is, or escaped when it holds a line break or other control character."""
    return name if name.isprintable() else ascii(name)


def _unsafe_part(part: str) -> bool:
    return part in ("", ".", "..") or "/" in part or "\\" in part


def _parse_name(name: str) -> tuple[str, str] | str:
    """(model, persona) of a released file's name, or why a file of that name is not imported."""
    if not name.endswith(".json"):
        return "not a .json file"
    match = _FILE_NAME.match(name)
    if match is not None:
        model, persona = match.group("model"), match.group("persona")
    else:
        stem = name[: -len(".json")]
        if "__" not in stem:
            return f"not named {_NAMING}"
        model, _, persona = stem.partition("__")
    if _unsafe_part(model):
        return f"unsafe model part {model!r} (empty, '.', '..' or a path separator)"
    if not _MODEL_PART.fullmatch(model):
        return f"model part {model!r} is not a name (letters, digits, '_', '.', '-', starting with a letter or digit)"
    if persona != "none" and persona not in PERSONA_KINDS:
        return f"persona part {persona!r} is none of: none, {', '.join(PERSONA_KINDS)}"
    return model, persona


def _looks_released(path: Path) -> bool:
    return path.name.endswith(".json") and "__" in path.name and path.is_file()


def dataset_folders(root: Path, skipped: list[dict[str, str]] | None = None) -> list[Path]:
    """ROOT itself when it holds released files, else its sub-folders that do.

    With SKIPPED, the entries of ROOT that are not read (when its sub-folders are) are added to it.
    """
    def has_files(folder: Path) -> bool:
        return any(_looks_released(p) for p in folder.iterdir())

    if has_files(root):
        return [root]
    found, ignored = [], []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and has_files(entry):
            found.append(entry)
        elif entry.is_dir():
            ignored.append({"file": str(entry), "reason": f"a folder without {_NAMING} files"})
        else:
            ignored.append({"file": str(entry), "reason": "beside the dataset folders (only the files in them are read)"})
    if not found:
        raise UsageError("no released outputs here: expected <model>__<persona>.json files "
                         "(e.g. pt_dpo__gold-rejected.json) in the folder or its sub-folders", where=str(root))
    if skipped is not None:
        skipped.extend(ignored)
    return found


def _load_folder(folder: Path, skipped: list[dict[str, str]] | None = None) -> list[Released]:
    files, ignored = [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            ignored.append({"file": str(path), "reason": "not a file (a dataset folder's sub-folders are not read)"})
            continue
        parsed = _parse_name(path.name)
        if isinstance(parsed, str):
            ignored.append({"file": str(path), "reason": parsed})
            continue
        model, persona = parsed
        files.append(Released(path=path.resolve(), model=model, persona=persona, rows=_read_released(path)))
    if not files:
        detail = f"; all {len(ignored)} skipped, first {_shown(Path(ignored[0]['file']).name)}: {ignored[0]['reason']}" if ignored else ""
        raise UsageError(f"no released outputs ({_NAMING}) in this folder{detail}", where=str(folder))
    if skipped is not None:
        skipped.extend(ignored)
    sizes = {len(f.rows) for f in files}
    if len(sizes) > 1:
        detail = ", ".join(f"{f.path.name}: {len(f.rows)}" for f in files)
        raise UsageError(f"the files are not aligned (their lengths differ: {detail})", where=str(folder))
    return files


def _questions(files: list[Released], folder: Path) -> list[str]:
    """The test questions, from the no-persona inputs (else from persona-tailored ones)."""
    questions: list[str] | None = None
    source = ""
    for released in files:
        if released.persona != "none":
            continue
        found = []
        for index, row in enumerate(released.rows):
            body, prefix = _split_prompt(row["prompt"], f"{released.path}: element {index}")
            found.append(body)
        if questions is None:
            questions, source = found, released.path.name
        else:
            for index, (a, b) in enumerate(zip(questions, found)):
                if a != b:
                    raise UsageError(f"question differs from {source}'s", where=f"{released.path}: element {index}")
    if questions is not None:
        return questions
    for released in files:
        rows = released.rows
        if all(_PERSONA in row["prompt"] for row in rows):
            out = []
            for index, row in enumerate(rows):
                body, _ = _split_prompt(row["prompt"], f"{released.path}: element {index}")
                out.append(body.rpartition(_PERSONA)[0])
            return out
    raise UsageError("cannot recover the questions: no <model>__none.json file and no persona-tailored file "
                     "(\"Prompt: ...\\nPersona: ...\\nResponse:\")", where=str(folder))


def _classify(released: Released, questions: list[str]) -> None:
    """Decide how the file's inputs were made and read each item's persona from them."""
    styles, personas, prefixes = set(), [], set()
    for index, (row, question) in enumerate(zip(released.rows, questions)):
        where = f"{released.path}: element {index}"
        body, prefix = _split_prompt(row["prompt"], where)
        prefixes.add(prefix)
        if not body.startswith(question):
            raise UsageError("input does not start with the item's question (are the files aligned?)", where=where)
        rest = body[len(question):]
        if released.persona == "none":
            if rest:
                raise UsageError(f"a no-persona input has text after the question: {rest[:60]!r}", where=where)
            styles.add("baseline")
            personas.append("")
        elif rest.startswith(_PERSONA):
            styles.add("pt")
            personas.append(rest[len(_PERSONA):])
        else:
            styles.add("inline")
            personas.append(_first_person_inverse(rest))
    if len(styles) > 1:
        raise UsageError(f"inputs mix formats ({', '.join(sorted(styles))}); expected one per file", where=str(released.path))
    released.style = styles.pop()
    released.personas = personas
    # The Mnemonic prefix differs per item ("<Term> sounds like"); report only whether there is one.
    released.prefix = "" if prefixes == {""} else "(per item)"


def _personas(files: list[Released], count: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Persona column -> values, and column -> the file it came from."""
    columns: dict[str, list[str]] = {}
    origin: dict[str, str] = {}
    for kind in PERSONA_KINDS:
        column = KIND_INFO[kind][2]
        tailored = [f for f in files if f.persona == kind and f.style == "pt"]
        inline = [f for f in files if f.persona == kind and f.style == "inline"]
        chosen = tailored or inline
        if not chosen:
            continue
        first = chosen[0]
        for other in chosen[1:]:
            for index in range(count):
                if other.personas[index] != first.personas[index]:
                    raise UsageError(f"{kind} persona differs from {first.path.name}'s", where=f"{other.path}: element {index}")
        if not tailored:
            logger.warning("%s personas reconstructed from first-person inputs of %s (no persona-tailored file has them)",
                           kind, first.path.name)
        columns[column] = list(first.personas)
        origin[column] = first.path.name
    return columns, origin


def _criteria_task(folder: Path, dataset: str | None) -> str:
    """The packaged task whose judge criteria apply to FOLDER: by its name, or by --dataset."""
    known = PACKAGED.get(_slug(folder.name))
    if dataset is None:
        if known is None:
            raise UsageError(f"dataset folder {folder.name!r} is none of beavertails, hhh (anthropic_hhh), mnemonic; "
                             f"pass --dataset {'|'.join(DATASETS)} to say whose judge criteria apply", where=str(folder))
        return known
    if dataset not in DATASETS:
        raise UsageError(f"--dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    wanted = DATASETS[dataset]
    if known is not None and known != wanted:
        named = next(key for key, value in DATASETS.items() if value == known)
        raise UsageError(f"--dataset {dataset} contradicts the folder's name {folder.name!r} ({named}'s outputs); "
                         "drop --dataset or rename the folder", where=str(folder))
    return wanted


def _packaged_task(name: str) -> tuple[str, dict[str, Any]]:
    """The packaged paper task's name and its settings, with its `include:` bases merged in."""
    from persona_eval.taskfile.loading import discover_tasks, load_task

    tasks = discover_tasks()
    if name not in tasks:
        raise UsageError(f"the packaged task {name!r} is not installed; reinstall persona-eval")
    return name, load_task(tasks[name]).raw


def _task_yaml(task_name: str, criteria: str, folder: Path, columns: dict[str, list[str]], count: int,
               judge_feedback: bool) -> tuple[str, str]:
    import yaml

    packaged_name, packaged = _packaged_task(criteria)
    judge = json.loads(json.dumps(packaged.get("judge", {})))
    if not judge_feedback:
        judge.setdefault("options", {})["feedback"] = False
    has_gold = "rejected_persona_gold" in columns or "chosen_persona_gold" in columns
    spec: dict[str, Any] = {
        "name": task_name,
        "version": 1,
        "description": (f"The paper's released {folder.name} test outputs ({count} prompts), imported with "
                        f"persona-eval import-outputs; judge criteria of {packaged_name}."),
        "dataset": {"test": f"{task_name}/test.jsonl"},
        "fields": {
            "id": "id", "prompt": "prompt", "chosen": "chosen", "rejected": "rejected",
            "chosen_persona": "chosen_persona_gold", "rejected_persona": "rejected_persona_gold",
            "chosen_persona_retrieved": "chosen_persona_retr", "rejected_persona_retrieved": "rejected_persona_retr",
        },
        "splits": ["chosen", "rejected"],
        "persona_source": "gold" if has_gold else "precomputed",
        "strategies": {"test": "pt", "baseline": "inline"},
    }
    for key in ("prompts", "response_prefix", "system_prompt", "generation"):
        if key in packaged:
            spec[key] = packaged[key]
    spec["judge"] = judge
    spec["defaults"] = {"model": "hf:embedded", "judge_model": PAPER_JUDGE_MODEL}
    header = (
        f"# Imported by `persona-eval import-outputs --format paper` from {folder}\n"
        "# (the released files are read in place; models.json beside this file names one\n"
        f"# `file:` model per released file). Judge criteria and prompts: packaged task {packaged_name}.\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=4096), packaged_name


def _render_check(task, files: list[Released]) -> dict[str, dict[str, Any]]:
    """Per file: how many released inputs our own rendering reproduces exactly."""
    from persona_eval.rendering.prompts import render_input, render_response_prefix

    examples = task.load("test")
    spec = task.spec
    report: dict[str, dict[str, Any]] = {}
    for released in files:
        exact, first_miss = 0, None
        for example, row in zip(examples, released.rows):
            if released.persona == "none":
                persona = ""
            else:
                source, split, _ = KIND_INFO[released.persona]
                persona = example.persona_for(split) if source == "gold" else example.extra.get(f"{split}_persona_retrieved", "")
            rendered = render_input(spec.prompts, released.style, example, persona)
            rendered += render_response_prefix(spec.response_prefix, example, persona)
            if rendered == row["prompt"]:
                exact += 1
            elif first_miss is None:
                first_miss = example.id
        report[released.label] = {"exact": exact, "total": len(released.rows), "first_mismatch": first_miss}
    return report


def _commands(task_path: Path, entries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The paper's comparisons among the released files: PT vs untrained model, same persona; vs no persona."""
    out = []
    # The hard benchmark (rejected personas) and gold personas first, as the paper's table reads.
    tailored = sorted((e for e in entries if e["strategy"] == "pt"),
                      key=lambda e: (e["split"] != "rejected", e["persona_source"] != "gold"))
    for test in tailored:
        baselines = [e for e in entries if e["persona"] == test["persona"] and e["strategy"] == "inline"]
        baselines += [e for e in entries if e["persona"] == "none"]
        for base in baselines:
            command = (
                f"persona-eval run --task {_quote(str(task_path))} --split {test['split']} "
                f"--persona-source {test['persona_source']} --model {_quote(test['spec'])} --strategy pt "
                f"--baseline {_quote(base['spec'])} --baseline-strategy {base['strategy']}"
            )
            out.append({"test": test["label"], "baseline": base["label"], "command": command})
    return out


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def import_paper_outputs(source: str | Path, out_dir: str | Path, *, prefix: str = "pe_paper_",
                         judge_feedback: bool = True, overwrite: bool = False, dataset: str | None = None) -> dict[str, Any]:
    """Import every dataset folder under SOURCE into OUT_DIR; returns the manifest (also written).

    DATASET (beavertails, hhh, mnemonic) names whose judge criteria apply when a folder's name does
    not; the manifest's ``skipped`` lists every file not imported, with the reason.
    """
    from persona_eval.storage.files import atomic_write_json, atomic_write_text
    from persona_eval.taskfile.loading import load_task

    source, out_dir = Path(source).expanduser(), Path(out_dir).expanduser()
    if not source.is_dir():
        raise UsageError("no such folder of released outputs", where=str(source))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", prefix or "x"):
        raise UsageError(f"--prefix {prefix!r}: use letters, digits, '_', '.' or '-'")
    out_dir = out_dir.resolve()

    # 1. Parse and check everything before writing anything.
    planned: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    if dataset is not None and dataset not in DATASETS:
        raise UsageError(f"--dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    for folder in dataset_folders(source.resolve(), skipped):
        files = _load_folder(folder, skipped)
        questions = _questions(files, folder)
        for released in files:
            _classify(released, questions)
        columns, origin = _personas(files, len(questions))
        criteria = _criteria_task(folder, dataset)
        slug = _slug(folder.name)
        task_name = f"{prefix}{slug}"
        rows = []
        for index, question in enumerate(questions):
            row = {"id": f"test-{index}", "prompt": question}
            row.update({column: values[index] for column, values in columns.items()})
            rows.append(row)
        text, packaged_name = _task_yaml(task_name, criteria, folder, columns, len(questions), judge_feedback)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        planned.append({"folder": folder, "files": files, "task": task_name, "yaml": text, "data": data,
                        "origin": origin, "packaged": packaged_name, "items": len(questions)})

    writes = {}
    for plan in planned:
        writes[out_dir / f"{plan['task']}.yaml"] = plan["yaml"]
        writes[out_dir / plan["task"] / "test.jsonl"] = plan["data"]
    clashes = [p for p, text in writes.items() if p.exists() and p.read_text(encoding="utf-8") != text]
    if clashes and not overwrite:
        raise UsageError(f"{clashes[0]} exists with other content (an earlier import?); pass --overwrite to replace it")

    # 2. Write the task files, then check our rendering against every released input.
    for path, text in writes.items():
        atomic_write_text(path, text)
    manifest: dict[str, Any] = {"schema": "persona-eval/import-outputs@1", "format": "paper", "source": str(source.resolve()),
                                "tasks": []}
    for plan in planned:
        task_path = out_dir / f"{plan['task']}.yaml"
        task = load_task(task_path)
        checks = _render_check(task, plan["files"])
        entries = []
        for released in plan["files"]:
            source_name, split = (KIND_INFO[released.persona][:2] if released.persona != "none" else (None, None))
            entries.append({
                "label": released.label, "model": released.model, "persona": released.persona,
                "persona_source": source_name, "split": split, "strategy": released.style,
                "spec": f"file:{released.path}", "items": len(released.rows), "render_check": checks[released.label],
            })
        manifest["tasks"].append({
            "task": plan["task"], "task_file": str(task_path), "data": str(out_dir / plan["task"] / "test.jsonl"),
            "dataset_folder": str(plan["folder"]), "items": plan["items"], "judge_criteria_from": plan["packaged"],
            "personas_from": plan["origin"], "models": entries, "comparisons": _commands(task_path, entries),
        })
    manifest["skipped"] = skipped
    atomic_write_json(out_dir / "models.json", manifest)
    return manifest


@click.command(name="import-outputs")
@click.argument("source", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["paper"]), default="paper", show_default=True,
              help="Layout of SOURCE: 'paper' = aligned JSON arrays <model>__<persona>.json per dataset folder.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the task YAML(s), their test data and models.json.")
@click.option("--prefix", default="pe_paper_", show_default=True, help="Task name prefix (+ the dataset folder's name).")
@click.option("--judge-feedback/--no-judge-feedback", default=True, show_default=True,
              help="Judge as the paper did (written feedback, then the verdict), or read the verdict from "
                   "P(A)/P(B) at once (for a small local judge such as hf:embedded).")
@click.option("--overwrite", is_flag=True, help="Replace files of an earlier import in the output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (models.json) instead of the summary.")
@click.option("--dataset", type=click.Choice(list(DATASETS)), default=None,
              help="Whose judge criteria apply, for a dataset folder not named beavertails, hhh or mnemonic.")
def import_outputs_command(source, fmt, out_dir, prefix, judge_feedback, overwrite, as_json, dataset):
    """Turn released model outputs into a local task and `file:` models you can judge with `persona-eval run`."""
    manifest = import_paper_outputs(source, out_dir, prefix=prefix, judge_feedback=judge_feedback, overwrite=overwrite,
                                    dataset=dataset)
    _report_skipped(manifest, Path(source))
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for task in manifest["tasks"]:
        table = Table("released file", "strategy", "persona source", "split", "inputs reproduced", "model spec",
                      title=f"{task['task']} ({task['items']} items): {task['task_file']}")
        for entry in task["models"]:
            check = entry["render_check"]
            table.add_row(entry["label"], entry["strategy"], entry["persona_source"] or "-", entry["split"] or "-",
                          f"{check['exact']}/{check['total']}", entry["spec"])
        console.print(table)
        if task["comparisons"]:
            console.print("Judge the paper's comparisons, e.g.:", style="bold")
            for comparison in task["comparisons"][:2]:
                console.print(comparison["command"], soft_wrap=True, markup=False, highlight=False)
    console.print(f"Manifest with every model spec and comparison command: {Path(out_dir).resolve() / 'models.json'}")


def _report_skipped(manifest: dict[str, Any], source: Path, shown: int = 10) -> None:
    """One stderr line per file not imported (the first SHOWN; the rest are counted), with the reason."""
    skipped = manifest.get("skipped") or []
    if not skipped:
        return
    root = Path(manifest["source"])
    count = len(skipped)
    click.echo(f"Skipped {count} file{'s' if count != 1 else ''} of {source} (not imported; listed under "
               "\"skipped\" in models.json):", err=True)
    for entry in skipped[:shown]:
        path = Path(entry["file"])
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        click.echo(f"  {_shown(name)}: {entry['reason']}", err=True)
    if count > shown:
        click.echo(f"  ... and {count - shown} more", err=True)


@hookimpl
def register_commands(cli):
    cli.add_command(import_outputs_command)
