"""The layer contracts and the type check catch what they are there to catch.

scripts/check.sh runs import-linter and mypy over the real tree (scripts/test.sh runs it
before the tests). These tests show both fail on a deliberately wrong import: import-linter
on a copy of the tree renamed `shoalcopy` with one bad import added, mypy on a snippet that
imports a name the floor does not have and passes a non-Clock where a `Clock` is due. They
also keep the one import namespace honest: nothing imports a bare top-level `agent`, `cli`...
(those only resolved from a checkout, and would load a second copy of a module), and every
package folder is in pyproject's package list.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("machinery", "apiserver", "controller", "agent", "testkit", "cli")
BIN = Path(sys.executable).parent


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _tracked_py() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / p for p in out.split()]


# --- import-linter ----------------------------------------------------------------------------

def _lint_copy(tmp_path: Path, bad: tuple[str, str] | None) -> subprocess.CompletedProcess:
    """Lint a copy of the tree (namespace `shoalcopy`) with `bad` = (file, import line) added."""
    ns = tmp_path / "ns"
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, ns / "shoalcopy" / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for f in (ns / "shoalcopy").rglob("*.py"):
        f.write_text(re.sub(r"\bshoal\.(?=(%s)\b)" % "|".join(FOLDERS), "shoalcopy.", f.read_text()))
    if bad is not None:
        path, line = bad
        target = ns / "shoalcopy" / path
        target.write_text(target.read_text() + f"\n{line}\n")
    section = (REPO / "pyproject.toml").read_text().split("[tool.importlinter]", 1)[1].split("\n# Type-checking", 1)[0]
    cfg = tmp_path / "importlinter.toml"
    cfg.write_text("[tool.importlinter]" + re.sub(r"\bshoal\.(?=(%s)\b)" % "|".join(FOLDERS), "shoalcopy.", section))
    env = dict(os.environ, PYTHONPATH=str(ns))
    return subprocess.run([str(BIN / "lint-imports"), str(cfg), "--no-cache"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_copy_of_the_tree_keeps_the_contracts(tmp_path):
    r = _lint_copy(tmp_path, None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "4 kept" in r.stdout, r.stdout


@pytest.mark.parametrize("path, line, why", [
    ("agent/worker.py", "import shoalcopy.controller.manager", "the agent never imports the controllers"),
    ("controller/gc.py", "from shoalcopy.agent import plan", "the controllers never import the agent"),
    ("controller/replicaset.py", "from shoalcopy.apiserver.store import Store", "nor the server's store"),
    ("machinery/api/objects.py", "import shoalcopy.apiserver.app", "the floor imports none of the peers"),
    ("apiserver/registry.py", "from shoalcopy.testkit import images", "no production package imports the test kits"),
    ("agent/plan.py", "from shoalcopy.cli import main", "cli is the composition root: nothing imports it"),
    ("machinery/api/times.py", "from shoalcopy.machinery.client import rest", "the floor's api is its bottom layer"),
    ("agent/runtime/spec.py", "from shoalcopy.machinery.client.rest import Client",
     "the seams' implementations never talk to the API server"),
    ("agent/network/ipam.py", "from shoalcopy.agent.runtime import mounts", "images, runtime, network are independent"),
])
def test_a_wrong_import_breaks_the_contracts(tmp_path, path, line, why):
    r = _lint_copy(tmp_path, (path, line))
    assert r.returncode != 0, f"{why}: import-linter accepted {line!r} in {path}\n{r.stdout}"
    assert "BROKEN" in r.stdout, r.stdout


# --- mypy -------------------------------------------------------------------------------------

def test_the_type_check_fails_on_a_wrong_import_and_a_broken_seam(tmp_path):
    (tmp_path / "shoal").symlink_to(REPO)
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent("""
        from shoal.machinery.control.clock import Clock, SystemClock   # no such name: the agent's old clock

        class NotAClock:
            def now(self) -> float:
                return 0.0

        clock: Clock = NotAClock()     # no monotonic(): not a Clock
    """))
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                        "--cache-dir", str(tmp_path / "cache"), str(snippet)],
                       cwd=tmp_path, env=dict(os.environ, MYPYPATH=str(tmp_path)), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'Module "shoal.machinery.control.clock" has no attribute "SystemClock"' in r.stdout, r.stdout
    assert 'Incompatible types in assignment (expression has type "NotAClock", variable has type "Clock")' \
        in r.stdout, r.stdout


# --- one import namespace ---------------------------------------------------------------------

def test_nothing_imports_a_bare_top_level_folder():
    bad = []
    for f in _tracked_py():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{f.relative_to(REPO)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in FOLDERS]
    assert not bad, "import these as shoal.<folder>...:\n" + "\n".join(bad)


def test_every_package_folder_is_installed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"shoal." + ".".join(p.parent.relative_to(REPO).parts)
             for folder in FOLDERS for p in (REPO / folder).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; stale: {sorted(listed - found)}"
