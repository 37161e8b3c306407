"""The package's import graph as grimp and import-linter see it, from the source folders.

`persona_eval` is spread over several folders by setuptools' ``package-dir``
(``harness/`` is `persona_eval`, ``plugins/`` is `persona_eval.plugins`, ...). grimp, and
with it import-linter, finds a package's modules by walking the folder of its top-level
package, so from an installed checkout it would see only ``harness/``. This script lays
the folders out as one ordinary package tree in a temporary folder (a copy of the
``.py`` files, nothing else) and runs the tools on that.

    python tools/import_graph.py lint      # import-linter with the contracts in pyproject.toml
    python tools/import_graph.py edges     # every import edge as JSON (imports inside functions too)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, Path]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return {name: REPO / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def lay_out(dest: Path) -> Path:
    """Copy every package folder's Python files to where a plain layout would put them."""
    for package, folder in sorted(package_dirs().items()):
        target = dest.joinpath(*package.split("."))
        for source in folder.rglob("*.py"):
            relative = source.relative_to(folder)
            # A sub-folder that is itself another package-dir entry is copied by that entry.
            if relative.parts and ".".join([package, *relative.parts[:-1]]) in package_dirs() and relative.parts[:-1]:
                continue
            out = target / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, out)
    return dest


def _run(command: list[str], tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(command, cwd=tree, env=env, text=True, capture_output=True)


EDGES = """
import json, grimp
graph = grimp.build_graph("persona_eval", include_external_packages=False, cache_dir=None)
print(json.dumps({m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}))
"""


def edges() -> dict[str, list[str]]:
    with tempfile.TemporaryDirectory(prefix="pe-import-graph-") as tmp:
        tree = lay_out(Path(tmp))
        done = _run([sys.executable, "-c", EDGES], tree)
        if done.returncode:
            raise RuntimeError(f"grimp failed: {done.stderr.strip()[-2000:]}")
        return json.loads(done.stdout)


def lint() -> int:
    with tempfile.TemporaryDirectory(prefix="pe-import-graph-") as tmp:
        tree = lay_out(Path(tmp))
        shutil.copyfile(REPO / "pyproject.toml", tree / "pyproject.toml")
        lint_imports = Path(sys.executable).with_name("lint-imports")
        done = _run([str(lint_imports) if lint_imports.exists() else "lint-imports", "--no-cache"], tree)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "lint"
    if what == "edges":
        print(json.dumps(edges(), indent=1))
    elif what == "lint":
        sys.exit(lint())
    else:
        sys.exit(f"usage: {sys.argv[0]} lint|edges")
