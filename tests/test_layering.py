"""One-way dependencies: ``streamguard_core`` never imports Prefect.

Every module of the core (found with ``pkgutil.walk_packages``) is imported in ONE fresh
interpreter; afterwards ``prefect`` must not be in ``sys.modules``. An import hook records who
asked for Prefect, so a failure names the core module and the line that pulled it in.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import streamguard_core

REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs in the child: import every module, report the first Prefect import's core frames.
_CHILD = r"""
import importlib, json, sys, traceback

modules, repo = json.loads(sys.argv[1]), sys.argv[2]
culprits = []


class PrefectWatch:
    def find_spec(self, name, path=None, target=None):
        if (name == "prefect" or name.startswith("prefect.")) and not culprits:
            culprits.append([f"{f.filename}:{f.lineno} ({f.name})"
                             for f in traceback.extract_stack()
                             if f.filename.startswith(repo) and "/.venv/" not in f.filename])
        return None  # let the real finders import it


sys.meta_path.insert(0, PrefectWatch())
report = {"failed": {}, "pulled_in_by": None}
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:
        report["failed"][name] = f"{type(exc).__name__}: {exc}"
    if "prefect" in sys.modules and report["pulled_in_by"] is None:
        report["pulled_in_by"] = {"module": name, "stack": culprits[0] if culprits else []}
report["prefect_loaded"] = "prefect" in sys.modules
print(json.dumps(report))
"""


def core_modules() -> list[str]:
    """Every module and package of ``streamguard_core`` (entry-point ``__main__`` modules,
    which run the CLI when imported, excepted)."""
    found = pkgutil.walk_packages(streamguard_core.__path__, prefix="streamguard_core.")
    return sorted(m.name for m in found if not m.name.endswith(".__main__"))


def test_walk_finds_the_core():
    names = core_modules()
    for expected in ("config", "training.loop", "training.job", "backends.local"):
        assert f"streamguard_core.{expected}" in names


def test_no_core_module_imports_prefect():
    modules = core_modules()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(modules), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, f"core modules that cannot be imported: {report['failed']}"
    assert not report["prefect_loaded"], (
        f"streamguard_core must never import prefect; it was pulled in while importing "
        f"{report['pulled_in_by']['module']}, via:\n  "
        + "\n  ".join(report["pulled_in_by"]["stack"])
    )


def test_only_the_core_installs_as_a_package():
    """``flows/`` and ``tasks/`` run from the checkout; installed, they would be top-level
    site-packages named ``flows`` and ``tasks``. setuptools' own discovery, with the project's
    settings, must find the core only."""
    import tomllib

    from setuptools import find_packages

    find = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = find_packages(str(REPO_ROOT), **find["packages"]["find"])
    assert "streamguard_core" in found and "streamguard_core.training" in found
    assert all(p == "streamguard_core" or p.startswith("streamguard_core.") for p in found), found
