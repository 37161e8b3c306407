"""`persona-eval` for the command tests: as a subprocess (`cli`) or in this process (`invoke`).

`imported_after` runs the CLI in a fresh interpreter and says which model libraries it
imported, for the tests that a command stays light. `cli` and `invoke` both return a `subprocess.CompletedProcess` with separate stdout and stderr, so a test can
switch between them. In process, the embedded model loads once per test session.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from persona_eval.cli import main; main()", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"},
    )


def invoke(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process; an exception other than an exit is raised, not hidden in the result."""
    from click.testing import CliRunner

    from persona_eval.cli import _add_plugin_commands
    from persona_eval.cli import cli as group

    if "infer" not in group.commands:  # the plugin commands, registered once
        _add_plugin_commands()
    separate = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    result = CliRunner(**separate).invoke(group, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


HEAVY_MODULES = ("torch", "transformers", "vllm", "safetensors")


def imported_after(args: list[str], cwd=None, timeout: float = 300) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The CLI's main(args) in a fresh interpreter, and which of HEAVY_MODULES it imported."""
    code = (
        "import sys\n"
        "from persona_eval.cli import main\n"
        "code = 0\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        f"sys.stderr.write('\\nHEAVY=' + ','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules) + '\\n')\n"
        "sys.exit(code)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    marker = [line for line in completed.stderr.splitlines() if line.startswith("HEAVY=")]
    assert marker, completed.stderr
    found = marker[-1].removeprefix("HEAVY=")
    return completed, found.split(",") if found else []
