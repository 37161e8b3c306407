"""Hostile and malformed input: one line naming the place, the right exit code, no half-written result.

`CORPUS` holds the cases (bad YAML, wrong types, missing fields, unknown names, broken
data and output files, non-UTF-8 bytes, duplicate ids, incomplete persona files, an
unwritable output folder, servers that refuse, a full disk). Each builds its files in a
fresh folder and runs ``persona-eval run`` (in-process through click, so the corpus stays
fast; `test_real_processes` runs a few of them as real processes). Every case must end
with exactly one ``Error:`` line on stderr that names the file, line, item, option or
server at fault, exit 2 (input the user can fix) or 1 (failure while running), no Python
traceback, and no results.json (or the previous one, untouched) and no temporary file.

`ACCEPTED` holds inputs that look hostile but are legitimate (an empty response, a 1 MB
response, a judge that answers with nothing): the run must finish and record them.

The disk-full cases use a real 256 KiB tmpfs when this process may mount one (root on
Linux) and otherwise make ``os.fsync`` fail with ENOSPC inside the process.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import reliability_support as rs
from click.testing import CliRunner
from openai_server_support import serve

from persona_eval.cli import cli

ITEMS = 4


@pytest.fixture(scope="module")
def judge_server():
    with serve(rs.judge_responder(), models=["judge"]) as server:
        yield server


@dataclass
class Case:
    """One corpus entry: `build(ctx)` writes files and returns extra CLI arguments (or a full argument list)."""

    build: Callable[["Ctx"], list[str] | None]
    code: int
    places: tuple[str, ...]  # substrings the error line must contain (file names, lines, ids, options)
    message: str = ""  # and this text, when given
    full_args: bool = False  # `build` returns the whole argument list


@dataclass
class Ctx:
    root: Path
    judge_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    fsync_patch: Callable[[int], None] | None = None  # replaces os.fsync while the case runs

    @property
    def task_dir(self) -> Path:
        return self.root / "task"

    @property
    def task(self) -> Path:
        return self.task_dir / "task.yaml"

    @property
    def data(self) -> Path:
        return self.task_dir / "test.jsonl"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def setup(self) -> None:
        rs.write_task(self.task_dir, ITEMS)
        rs.write_outputs(self.root / "test.json", ITEMS, "test")
        rs.write_outputs(self.root / "base.json", ITEMS, "baseline")

    def args(self, *, task=None, model=None, baseline=None, judge="gpt-4o", judge_model=None, out=None) -> list[str]:
        return [
            "run", "--task", str(task or self.task), "--split", "rejected",
            "--model", model or f"file:{self.root / 'test.json'}", "--baseline", baseline or f"file:{self.root / 'base.json'}",
            "--judge", judge, "--judge-model", judge_model or f"openai:judge,base_url={self.judge_url},max_retries=1,backoff=0.01",
            "--limit", "0", "--output-dir", str(out or self.out), "--bootstrap", "50", "--quiet",
        ]

    def edit_task(self, old: str, new: str) -> None:
        text = self.task.read_text()
        assert old in text, old
        self.task.write_text(text.replace(old, new, 1))

    def data_lines(self) -> list[str]:
        return self.data.read_text().splitlines()

    def write_data(self, lines: list[str]) -> None:
        self.data.write_text("\n".join(lines) + "\n")


def _outputs(ctx: Ctx, text: str, *, name: str = "test.jsonl") -> str:
    path = ctx.root / name
    path.write_text(text)
    return f"file:{path}"


def _tiny_disk(ctx: Ctx) -> Path:
    """A real 256 KiB tmpfs at root/disk (root only); skips the case where mounting is not allowed."""
    disk = ctx.root / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    except OSError:  # no mount(8) here
        mounted = None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); the ENOSPC-injection cases cover the disk-full path")
    ctx.extra_env["_MOUNT"] = str(disk)
    return disk


def _fill(disk: Path, leave: int) -> None:
    """Fill a tmpfs until only about `leave` bytes are free."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / "filler", "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))


def _run_once(ctx: Ctx, args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


# ---- the corpus --------------------------------------------------------------------------------


def _yaml(text: str):
    def build(ctx: Ctx):
        ctx.task.write_text(text)
    return build


def _task_edit(old: str, new: str):
    def build(ctx: Ctx):
        ctx.edit_task(old, new)
    return build


def _data(mutate: Callable[[list[str]], list[str]]):
    def build(ctx: Ctx):
        ctx.write_data(mutate(ctx.data_lines()))
    return build


def _replace_line(number: int, text: str):
    return _data(lambda lines: lines[: number - 1] + [text] + lines[number:])


def _args(**overrides):
    def build(ctx: Ctx):
        return ctx.args(**{k: (v(ctx) if callable(v) else v) for k, v in overrides.items()})
    return build


def _non_utf8_task(ctx: Ctx):
    ctx.task.write_bytes(ctx.task.read_bytes().replace(b"Synthetic items", b"Synthetic \xff\xfe items"))


def _non_utf8_data(ctx: Ctx):
    lines = ctx.data.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"Question", b"Qu\xe9stion")  # latin-1, not UTF-8
    ctx.data.write_bytes(b"\n".join(lines))


def _outputs_missing_item(ctx: Ctx):
    data = json.loads((ctx.root / "test.json").read_text())
    del data["item-00002"]
    (ctx.root / "test.json").write_text(json.dumps(data))


def _outputs_bad_line(ctx: Ctx):
    lines = [json.dumps({"id": rs.item(i)["id"], "response": f"answer {i}"}) for i in range(ITEMS)]
    lines[1] = '{"id": "item-00001", "response": "cut'
    return ctx.args(model=_outputs(ctx, "\n".join(lines) + "\n"))


def _outputs_duplicate(ctx: Ctx):
    lines = [json.dumps({"id": rs.item(i % 3)["id"], "response": f"answer {i}"}) for i in range(ITEMS)]
    return ctx.args(model=_outputs(ctx, "\n".join(lines) + "\n"))


def _outputs_non_utf8(ctx: Ctx):
    path = ctx.root / "test.jsonl"
    path.write_bytes(b'{"id": "item-00000", "response": "caf\xe9"}\n')
    return ctx.args(model=f"file:{path}")


def _persona_file(text: str, name: str = "personas.jsonl"):
    def build(ctx: Ctx):
        path = ctx.root / name
        path.write_text(text)
        return ctx.args() + ["--persona-file", str(path)]
    return build


def _personas_missing_items():
    lines = [json.dumps({"id": rs.item(i)["id"], "persona": f"The user is person {i}."}) for i in (0, 1, 3)]
    return _persona_file("\n".join(lines) + "\n")


def _personas_bad_line():
    lines = [json.dumps({"id": rs.item(i)["id"], "persona": f"The user is person {i}."}) for i in range(ITEMS)]
    lines[2] = "{not json"
    return _persona_file("\n".join(lines) + "\n")


def _out_under_a_file(ctx: Ctx):
    blocker = ctx.root / "not-a-folder"
    blocker.write_text("a regular file where the run folder's parent should be")
    return ctx.args(out=blocker / "run")


def _out_holds_other_run(ctx: Ctx):
    ctx.out.mkdir()
    (ctx.out / "config.json").write_text(json.dumps({"run_key": "0123456789ab"}))


def _out_corrupt_config(ctx: Ctx):
    ctx.out.mkdir()
    (ctx.out / "config.json").write_text('{"run_key": "trunc')


def _server_404(ctx: Ctx):
    return ctx.args(judge_model=f"openai:no-such-judge,base_url={ctx.judge_url},max_retries=1")


def _server_unreachable(ctx: Ctx):
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return ctx.args(judge_model=f"openai:judge,base_url=http://127.0.0.1:{port}/v1,max_retries=1,backoff=0.01")


def _disk_full_records(ctx: Ctx):
    """The run folder on a tmpfs with ~48 KiB free and a 1 MB response to record: ENOSPC mid-run."""
    disk = _tiny_disk(ctx)
    _fill(disk, 48 << 10)
    data = json.loads((ctx.root / "test.json").read_text())
    data["item-00003"] = "x" * (1 << 20)
    (ctx.root / "test.json").write_text(json.dumps(data))
    return ctx.args(out=disk / "run")


def _disk_full_rerun(ctx: Ctx):
    """A finished run on a tmpfs that then fills up: the rerun fails writing, results.json stays intact."""
    disk = _tiny_disk(ctx)
    _run_once(ctx, ctx.args(out=disk / "run"))
    _fill(disk, 0)
    return ctx.args(out=disk / "run")


def _enospc_on_fsync(target: str):
    """ENOSPC from os.fsync while writing `target` (the fallback where no tmpfs can be mounted)."""
    def build(ctx: Ctx):
        real_fsync = os.fsync

        def fsync(fd):
            name = os.readlink(f"/proc/self/fd/{fd}")
            if name.endswith(target) or f"/.{target}." in name:  # the file, or the atomic writer's temporary
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        ctx.fsync_patch = fsync
        if target == "results.json":
            _run_once(ctx, ctx.args())  # a previous, complete results.json that must survive
            (ctx.out / "judgments.jsonl").unlink()  # the rerun judges again, then writes results
        return ctx.args()
    return build


BAD_TASK_HEAD = "name: reliability\nversion: 1\ndataset:\n  test: test.jsonl\n"

CORPUS: dict[str, Case] = {
    # -- task YAML
    "yaml-syntax-error": Case(_yaml(BAD_TASK_HEAD + "splits: [chosen, rejected\nstrategies: {test: pt}\n"), 2, ("task.yaml:6",), "invalid YAML"),
    "yaml-tab-indentation": Case(_yaml(BAD_TASK_HEAD + "generation:\n\tmax_new_tokens: 8\n"), 2, ("task.yaml:6",), "invalid YAML"),
    "yaml-empty-file": Case(_yaml(""), 2, ("task.yaml",), "mapping"),
    "yaml-not-a-mapping": Case(_yaml("- name: reliability\n- dataset: x\n"), 2, ("task.yaml:1",), "mapping"),
    "yaml-python-object-tag": Case(_yaml(BAD_TASK_HEAD + "description: !!python/object/apply:os.system ['echo pwned']\n"),
                                   2, ("task.yaml:5",), "invalid YAML"),
    "yaml-wrong-type": Case(_task_edit("max_new_tokens: 64\n", "max_new_tokens: plenty\n"), 2, ("task.yaml:12", "generation.max_new_tokens")),
    "yaml-missing-dataset": Case(_task_edit("dataset:\n  test: test.jsonl\n", ""), 2, ("task.yaml", "dataset"), "required field is missing"),
    "yaml-unknown-field": Case(_task_edit("version: 1\n", "version: 1\njduge: {}\n"), 2, ("task.yaml:3", "jduge"), "unknown field"),
    "yaml-path-in-task-name": Case(_task_edit("name: reliability\n", "name: ../../escape\n"), 2, ("task.yaml:1", "name")),
    "yaml-non-utf8": Case(_non_utf8_task, 2, ("task.yaml",), "not UTF-8"),
    "template-syntax-error": Case(_task_edit("strategies:\n", "prompts:\n  pt: 'Prompt: {{ prompt }'\nstrategies:\n"), 2,
                                  ("task.yaml:9", "prompts.pt"), "template"),
    "template-undefined-variable": Case(_task_edit("strategies:\n", "prompts:\n  pt: 'Prompt: {{ secret_of_the_host }}'\nstrategies:\n"),
                                        2, ("task.yaml", "prompts.pt"), "undefined"),
    "task-file-missing": Case(_args(task=lambda ctx: ctx.root / "nope.yaml"), 2, ("nope.yaml",), "not found", full_args=True),
    "task-name-unknown": Case(_args(task="reliabilty"), 2, ("'reliabilty'",), "unknown task", full_args=True),
    # -- task data
    "data-file-missing": Case(lambda ctx: ctx.data.unlink(), 2, ("test.jsonl",), "not found"),
    "data-bad-jsonl-line": Case(_replace_line(3, '{"id": "item-00002", "prompt": "cut'), 2, ("test.jsonl:3",), "malformed"),
    "data-line-not-an-object": Case(_replace_line(2, "[1, 2, 3]"), 2, ("test.jsonl:2",)),
    "data-non-utf8": Case(_non_utf8_data, 2, ("test.jsonl:2",)),
    "data-missing-prompt": Case(_replace_line(2, json.dumps({"id": "item-00001", "chosen_persona": "x", "rejected_persona": "y"})),
                                2, ("test.jsonl:2", "'prompt'"), "missing"),
    "data-wrong-type": Case(_replace_line(4, json.dumps({**rs.item(3), "prompt": 42})), 2, ("test.jsonl:4", "'prompt'"), "text"),
    "data-duplicate-ids": Case(_replace_line(3, json.dumps({**rs.item(2), "id": "item-00000"})), 2, ("test.jsonl:3", "item-00000"),
                               "duplicate"),
    "data-empty-file": Case(lambda ctx: ctx.data.write_text(""), 2, ("test.jsonl",), "no items"),
    # -- names and options
    "unknown-backend": Case(_args(model="nosuchbackend:model"), 2, ("'nosuchbackend'",), "unknown generator", full_args=True),
    "unknown-judge": Case(_args(judge="promethues"), 2, ("'promethues'",), "did you mean", full_args=True),
    "unknown-persona-source": Case(lambda ctx: ctx.args() + ["--persona-source", "telepathy"], 2, ("'telepathy'",),
                                   "unknown persona source", full_args=True),
    "model-spec-without-backend": Case(_args(model="just-a-name"), 2, ("--model", "'just-a-name'"), "BACKEND:MODEL", full_args=True),
    "model-spec-bad-option": Case(_args(model=lambda ctx: f"file:{ctx.root / 'test.json'},oops"), 2, ("--model", "'oops'"),
                                  "key=value", full_args=True),
    "backend-option-wrong-type": Case(_args(judge_model=lambda ctx: f"openai:judge,base_url={ctx.judge_url},max_concurrency=lots"),
                                      2, ("max_concurrency",), "integer", full_args=True),
    "negative-limit": Case(lambda ctx: ctx.args() + ["--limit", "-3"], 2, ("--limit",), full_args=True),
    # -- precomputed outputs (the `file` backend)
    "outputs-file-missing": Case(_args(model=lambda ctx: f"file:{ctx.root / 'gone.json'}"), 2, ("gone.json",), "no such file",
                                 full_args=True),
    "outputs-bad-jsonl-line": Case(_outputs_bad_line, 2, ("test.jsonl:2",), "not valid JSON", full_args=True),
    "outputs-missing-an-item": Case(_outputs_missing_item, 2, ("test.json", "item-00002"), "no response"),
    "outputs-duplicate-ids": Case(_outputs_duplicate, 2, ("test.jsonl:4", "item-00000"), "duplicate", full_args=True),
    "outputs-non-utf8": Case(_outputs_non_utf8, 2, ("test.jsonl",), "not UTF-8", full_args=True),
    # -- user-written personas
    "persona-file-missing-items": Case(_personas_missing_items(), 2, ("personas.jsonl", "item-00002"), full_args=True),
    "persona-file-bad-line": Case(_personas_bad_line(), 2, ("personas.jsonl:3",), full_args=True),
    # -- the output folder
    "output-dir-under-a-file": Case(_out_under_a_file, 2, ("not-a-folder",), full_args=True),
    "output-dir-holds-another-run": Case(_out_holds_other_run, 2, ("out",), "different run"),
    "output-dir-corrupt-config": Case(_out_corrupt_config, 2, ("config.json",), "unreadable"),
    # -- servers that refuse
    "judge-model-not-served": Case(_server_404, 2, ("'no-such-judge'", "127.0.0.1"), "HTTP 404", full_args=True),
    "judge-server-unreachable": Case(_server_unreachable, 1, ("127.0.0.1",), "is the server running", full_args=True),
    # -- a full disk
    "disk-full-while-recording": Case(_disk_full_records, 1, ("generations.jsonl",), "No space left on device", full_args=True),
    "disk-full-on-rerun": Case(_disk_full_rerun, 1, ("run/",), "No space left on device", full_args=True),
    "enospc-writing-records": Case(_enospc_on_fsync("generations.jsonl"), 1, ("generations.jsonl",), "No space left on device",
                                   full_args=True),
    "enospc-writing-results": Case(_enospc_on_fsync("results.json"), 1, ("results.json",), "No space left on device",
                                   full_args=True),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists() or not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("results.json")}


def _invoke(args: list[str], monkeypatch, ctx: Ctx):
    if ctx.fsync_patch is not None:
        monkeypatch.setattr(os, "fsync", ctx.fsync_patch)
    return CliRunner().invoke(cli, args)


def test_the_corpus_is_big_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_input(name, tmp_path, judge_server, monkeypatch):
    case = CORPUS[name]
    ctx = Ctx(root=tmp_path, judge_url=judge_server.base_url)
    ctx.setup()
    try:
        built = case.build(ctx)
        args = built if case.full_args or built else ctx.args()
        out_index = args.index("--output-dir") + 1
        out = Path(args[out_index])
        before = _snapshot(out)
        result = _invoke(args, monkeypatch, ctx)
        after = _snapshot(out)
        leftovers = [str(p) for p in tmp_path.rglob("*.tmp")]
    finally:
        if "_MOUNT" in ctx.extra_env:
            subprocess.run(["umount", ctx.extra_env["_MOUNT"]], check=False)

    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{name}: a traceback instead of an error line: {result.exception!r}"
    )
    assert result.exit_code == case.code, f"{name}: exit {result.exit_code}, stderr: {result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"{name}: not one error line: {result.stderr!r}"
    for place in case.places:
        assert place in lines[0], f"{name}: the error does not name {place!r}: {lines[0]}"
    assert case.message.lower() in lines[0].lower(), f"{name}: expected {case.message!r} in: {lines[0]}"
    assert "Traceback" not in result.output
    # No half-written result: results.json absent, or exactly the previous one; no temporary file.
    assert after == before, f"{name}: results.json changed or appeared"
    assert leftovers == [], f"{name}: temporary files left: {leftovers}"


# ---- inputs that look hostile but are legitimate ---------------------------------------------


def _empty_judge_output(chat):
    return ""


def test_empty_and_one_megabyte_responses_are_recorded_and_judged(tmp_path, judge_server):
    ctx = Ctx(root=tmp_path, judge_url=judge_server.base_url)
    ctx.setup()
    data = json.loads((tmp_path / "test.json").read_text())
    data["item-00000"] = ""
    data["item-00001"] = "big " * (1 << 18)  # 1 MiB
    (tmp_path / "test.json").write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ctx.args(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    gens = {(r["item_id"], r["role"]): r for r in rs.records(ctx.out / "generations.jsonl")}
    assert gens[("item-00000", "test")]["response"] == ""
    assert len(gens[("item-00001", "test")]["response"]) == len(data["item-00001"].strip())
    judgments = rs.records(ctx.out / "judgments.jsonl")
    assert {(r["item_id"], r["criterion"], r["order"]) for r in judgments} == {
        (rs.item(i)["id"], c, o) for i in range(ITEMS) for c in ("personalization", "quality")
        for o in ("baseline_first", "test_first")
    }
    assert json.loads((ctx.out / "results.json").read_text())["metrics"]["items"] == ITEMS


def test_a_judge_that_answers_nothing_leaves_every_pair_unscored_with_a_reason(tmp_path):
    ctx = Ctx(root=tmp_path, judge_url="")
    ctx.setup()
    with serve(_empty_judge_output) as server:
        ctx.judge_url = server.base_url
        result = CliRunner().invoke(cli, ctx.args(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    judgments = rs.records(ctx.out / "judgments.jsonl")
    assert len(judgments) == ITEMS * 4
    assert all(r["winner"] is None and r["unscored_reason"].startswith("empty judge output") for r in judgments)
    metrics = json.loads((ctx.out / "results.json").read_text())["metrics"]
    assert metrics["judge_health"]["unscored_verdicts"] == ITEMS * 4


# ---- a few cases as real processes: the exit status and stderr of the actual program ----------


@pytest.mark.parametrize("name", ["yaml-python-object-tag", "data-bad-jsonl-line", "output-dir-under-a-file",
                                  "outputs-missing-an-item", "disk-full-while-recording"])
def test_real_processes(name, tmp_path, judge_server):
    case = CORPUS[name]
    ctx = Ctx(root=tmp_path, judge_url=judge_server.base_url)
    ctx.setup()
    try:
        built = case.build(ctx)
        args = built if case.full_args or built else ctx.args()
        completed = subprocess.run(rs.cli_command(*args), capture_output=True, text=True, timeout=120,
                                   env=rs.cli_env(tmp_path / "cache"))
    finally:
        if "_MOUNT" in ctx.extra_env:
            subprocess.run(["umount", ctx.extra_env["_MOUNT"]], check=False)
    assert completed.returncode == case.code, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), completed.stderr
    assert all(place in lines[0] for place in case.places), lines[0]
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("*.tmp"))
