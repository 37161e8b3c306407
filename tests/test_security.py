"""Security: task files and data never run code, API keys never leak, names never escape the output folder.

- YAML: ``!!python/...`` tags in a task file or a persona file are rejected by the safe
  loader (exit 2 naming file and line) and the payload never runs; no module loads YAML or
  evaluates text any other way.
- Jinja: prompt templates run in the sandbox; the classic escapes (``__class__``,
  ``__globals__``, ``str.format`` attribute walks) fail as a UsageError naming the task file
  and template, and text from the data is never itself rendered as a template.
- API keys: a sentinel key in $OPENAI_API_KEY goes through the OpenAI-compatible backend's
  success and error paths (401 echoing the key, 404 and 500 bodies echoing it, timeouts,
  refused connections); it appears in no error line, log (``-v``), config.json, results,
  record or cache entry.
- Paths: run folders derived from hostile model specs (``../``, absolute paths, NUL bytes,
  very long names) stay inside the runs folder; so do re-judging folders.
HTML escaping of hostile strings is tested with the leaderboard (tests/test_leaderboard_html.py).
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest
import reliability_support as rs
from openai_server_support import FaultPlan, register_fault, serve

from persona_eval.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
SENTINEL = "sk-SENTINEL-7f3a9c1e5b2d4f60-do-not-leak"


# ---- YAML never constructs Python objects -------------------------------------------------------

YAML_PAYLOADS = {
    "object-apply": "!!python/object/apply:os.system ['touch {marker}']",
    "object-new": "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "name": "!!python/name:os.system",
    "module": "!!python/module:os",
}


@pytest.mark.parametrize("payload", list(YAML_PAYLOADS))
def test_task_yaml_cannot_construct_python_objects(payload, tmp_path):
    marker = tmp_path / "pwned"
    task = rs.write_task(tmp_path / "task", 2)
    text = task.read_text().replace("description: Synthetic items for the reliability tests and benchmarks.",
                                    "description: " + YAML_PAYLOADS[payload].format(marker=marker))
    task.write_text(text)
    completed = rs.cli("validate", str(task), cache=tmp_path / "cache")
    assert completed.returncode == 2
    line = completed.stderr.strip()
    assert "\n" not in line and line.startswith(
        f"Error: {task}:3: invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/"), line
    assert not marker.exists()


def test_persona_yaml_cannot_construct_python_objects(tmp_path):
    marker = tmp_path / "pwned"
    personas = tmp_path / "personas.yaml"
    personas.write_text(f"item-00000: !!python/object/apply:os.system ['touch {marker}']\n")
    task = rs.write_task(tmp_path / "task", 2)
    outputs = rs.write_outputs(tmp_path / "out.json", 2, "test")
    completed = rs.cli(*rs.run_args(task, tmp_path / "run", model=f"file:{outputs}", baseline=f"file:{outputs}",
                                    judge_model="openai:judge,base_url=http://127.0.0.1:9/v1"),
                       "--persona-file", str(personas), cache=tmp_path / "cache")
    assert completed.returncode == 2, completed.stderr
    assert f"{personas}:1" in completed.stderr and "python/object/apply" in completed.stderr
    assert not marker.exists() and not (tmp_path / "run" / "results.json").exists()


def _calls(path: Path) -> list[tuple[str, int, str]]:
    """(file, line, call) for every yaml.load/unsafe_load/full_load/eval/exec/compile call in the source."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
        if (owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all")) or \
                (owner == "" and name in ("eval", "exec")):
            found.append((str(path.relative_to(REPO)), node.lineno, f"{owner + '.' if owner else ''}{name}"))
    return found


def test_no_module_loads_yaml_unsafely_or_evaluates_text():
    sources = [p for folder in ("harness", "plugins", "trainers", "leaderboards") for p in (REPO / folder).rglob("*.py")]
    assert len(sources) > 20
    offenders = [call for path in sources for call in _calls(path)]
    assert offenders == [], f"unsafe loading or evaluation: {offenders}"


# ---- Jinja templates run in the sandbox -------------------------------------------------------------

JINJA_PAYLOADS = {
    "mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler-globals": "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}",
    "namespace-class": "{% set ns = namespace() %}{{ ns.__class__.__init__.__globals__ }}",
    "format-walk": "{{ '{0.__class__.__mro__}'.format(prompt) }}",
    "persona-attribute": "{{ persona.__class__.__base__.__subclasses__() }}",
    "self-context": "{{ self._TemplateReference__context }}",
}


@pytest.mark.parametrize("payload", list(JINJA_PAYLOADS))
def test_prompt_template_escapes_fail_as_usage_errors(payload, tmp_path):
    from persona_eval.rendering.prompts import render_template

    source = JINJA_PAYLOADS[payload].replace("MARKER", str(tmp_path / "pwned"))
    with pytest.raises(UsageError) as caught:
        render_template(source, prompt="How do I bake bread?", persona="The user is a baker.")
    assert "unsafe" in str(caught.value) or "undefined" in str(caught.value)
    assert not (tmp_path / "pwned").exists()


def test_a_sandbox_escape_in_a_task_fails_the_run_naming_file_and_template(tmp_path):
    marker = tmp_path / "pwned"
    task = rs.write_task(tmp_path / "task", 2)
    payload = JINJA_PAYLOADS["cycler-globals"].replace("MARKER", str(marker))
    task.write_text(task.read_text().replace("strategies:\n", f"prompts:\n  pt: \"{payload}\"\nstrategies:\n", 1))
    outputs = rs.write_outputs(tmp_path / "out.json", 2, "test")
    completed = rs.cli(*rs.run_args(task, tmp_path / "run", model=f"file:{outputs}", baseline=f"file:{outputs}",
                                    judge_model="openai:judge,base_url=http://127.0.0.1:9/v1"), cache=tmp_path / "cache")
    assert completed.returncode == 2, completed.stderr
    line = completed.stderr.strip()
    assert line.startswith(f"Error: {task}: prompts.pt (item 'item-00000'): template tried an unsafe operation"), line
    assert "\n" not in line and not marker.exists()


def test_data_is_never_rendered_as_a_template():
    from persona_eval.contracts.records import Example
    from persona_eval.rendering.prompts import render_input
    from persona_eval.taskfile.schema import DEFAULT_PROMPTS

    hostile = "{{ 7 * 7 }} {% for x in range(3) %}loop{% endfor %} {{ ''.__class__ }}"
    example = Example(id="x", prompt=hostile, chosen="", rejected="", chosen_persona="", rejected_persona="")
    for strategy in ("baseline", "inline", "pt"):
        text = render_input(dict(DEFAULT_PROMPTS), strategy, example, persona=hostile)
        assert hostile in text and "49" not in text and "looploop" not in text


# ---- API keys never leak --------------------------------------------------------------------------------


async def _echo_key(ctx, status: int):
    """An OpenAI-style error whose message repeats the Authorization header, as careless servers do."""
    from aiohttp import web

    presented = ctx.request.headers.get("Authorization", "")
    message = f"upstream rejected credentials {presented} for this request"
    return web.json_response({"error": {"message": message, "type": "server_error", "code": None}}, status=status)


async def _echo_key_404(ctx):
    return await _echo_key(ctx, 404)


async def _echo_key_500(ctx):
    return await _echo_key(ctx, 500)


register_fault("echo-key-404", _echo_key_404)
register_fault("echo-key-500", _echo_key_500)


def _scan(folder: Path) -> list[str]:
    """Every file under `folder` holding the sentinel (raw bytes: SQLite pages, JSON, logs)."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and SENTINEL.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def keyed():
    """A generation server and a judge server that demand the sentinel key."""
    with serve(rs.gen_responder(), api_key=SENTINEL) as gen, serve(rs.judge_responder(), api_key=SENTINEL) as judge:
        yield gen, judge


def _keyed_run(tmp_path: Path, gen_url: str, judge_url: str, *, judge_options: str = "", verbose: bool = True,
               key: str = SENTINEL):
    task = rs.write_task(tmp_path / "task", 3)
    args = rs.run_args(task, tmp_path / "run", model=f"openai:test-model,base_url={gen_url}",
                       baseline=f"openai:base-model,base_url={gen_url}",
                       judge_model=f"openai:judge,base_url={judge_url},max_retries=1,backoff=0.01{judge_options}")
    env = rs.cli_env(tmp_path / "cache", OPENAI_API_KEY=key)
    return subprocess.run(rs.cli_command(*(["-v"] if verbose else []), *args), capture_output=True, text=True,
                          timeout=120, env=env)


def test_the_key_is_used_but_never_written(keyed, tmp_path):
    gen, judge = keyed
    completed = _keyed_run(tmp_path, gen.base_url, judge.base_url)
    assert completed.returncode == 0, completed.stderr
    assert judge.stats.snapshot()["statuses"].get(200, 0) > 0  # the key was sent: the server accepted it
    assert SENTINEL not in completed.stdout + completed.stderr
    assert (tmp_path / "run" / "results.json").exists()
    assert _scan(tmp_path) == []


ERROR_PATHS = {
    # name: (server api key, fault kinds, judge options, exit code, text in the error line)
    "401-echoes-the-presented-key": ("another-key", None, "", 2, "HTTP 401"),
    "404-body-echoes-the-key": (SENTINEL, ("echo-key-404",), "", 2, "HTTP 404"),
    "500-body-echoes-the-key": (SENTINEL, ("echo-key-500",), "", 1, "HTTP 500"),
    "timeout": (SENTINEL, ("hang",), ",timeout=0.3", 1, "timeout"),
    "connection-refused": (SENTINEL, None, "", 1, "cannot connect"),
}


@pytest.mark.parametrize("path", list(ERROR_PATHS))
def test_the_key_never_appears_in_errors_logs_or_files(path, keyed, tmp_path):
    gen, _ = keyed
    server_key, kinds, options, code, text = ERROR_PATHS[path]
    faults = FaultPlan(rate=1.0, kinds=kinds, hang_s=5) if kinds else None
    if path == "connection-refused":
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        completed = _keyed_run(tmp_path, gen.base_url, url, judge_options=options)
    else:
        with serve(rs.judge_responder(), api_key=server_key, faults=faults) as judge:
            completed = _keyed_run(tmp_path, gen.base_url, judge.base_url, judge_options=options)
    assert completed.returncode == code, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and text in errors[0], completed.stderr
    if path != "connection-refused" and path != "timeout":
        assert "***" in errors[0]  # the server did echo it; the client redacted it
    assert SENTINEL not in completed.stdout + completed.stderr
    assert SENTINEL[:20] not in completed.stdout + completed.stderr
    assert _scan(tmp_path) == []


# ---- names never escape the output folder ------------------------------------------------------------

HOSTILE_SPECS = [
    "file:../../../../../etc/passwd",
    "file:/etc/passwd",
    "openai:..",
    "openai:../..",
    "openai:a/../../../../b",
    "hf:/abs/path/../../../x",
    "openai:~/.ssh/id_rsa",
    "openai:C:\\Windows\\..\\..\\x",
    "openai:evil\x00name",
    "openai:" + "../" * 200 + "deep",
    "openai:.hidden",
    "openai:-rf",
]


@pytest.mark.parametrize("spec", HOSTILE_SPECS, ids=range(len(HOSTILE_SPECS)))
def test_run_folders_from_hostile_model_specs_stay_inside_the_runs_folder(spec, tmp_path):
    from persona_eval.pipeline.judges import parse_judge_choices
    from persona_eval.pipeline.run import Run, RunOptions, rejudge_dir

    task = rs.write_task(tmp_path / "task", 2)
    runs = tmp_path / "runs"
    run = Run(RunOptions(task=str(task), model=spec, baseline=spec, judges=("gpt-4o",), judge_model=spec,
                         runs_root=str(runs)), progress=False)
    folder = run.run_dir.resolve()
    assert folder.parent == runs.resolve(), folder
    assert not run.run_dir.name.startswith((".", "-")) and "/" not in run.run_dir.name and "\x00" not in run.run_dir.name
    assert len(run.run_dir.name) < 100
    judged = rejudge_dir(run.run_dir, parse_judge_choices([f"gpt-4o@{spec}"], spec), spec).resolve()
    assert judged.parent == folder, judged


def test_a_real_run_with_a_dotted_model_path_writes_only_under_runs(tmp_path):
    outputs = rs.write_outputs(tmp_path / "outputs" / "model.json", 2, "test")
    task = rs.write_task(tmp_path / "task", 2)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with serve(rs.judge_responder()) as judge:
        args = rs.run_args(task, tmp_path / "unused", model="file:../outputs/../outputs/model.json",
                           baseline=f"file:{outputs}", judge_model=f"openai:judge,base_url={judge.base_url}")
        args = args[: args.index("--output-dir")] + args[args.index("--output-dir") + 2:]
        completed = rs.cli(*args, cache=tmp_path / "cache", cwd=workdir)
    assert completed.returncode == 0, completed.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and "cache" not in p.parts)
    new = [p for p in written if not p.startswith(("task/", "outputs/"))]
    assert new and all(p.startswith("work/runs/") for p in new), new
    assert os.listdir(workdir / "runs")[0].startswith("reliability-rejected-")
