"""The Dockerfiles (no Docker engine here): COPY sources exist, the entrypoint is ours."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile.train", "Dockerfile.worker"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def _words(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def _scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copy_source_exists(name):
    copies = [args for kw, args in instructions(REPO / "docker" / name) if kw in ("COPY", "ADD")]
    assert copies, f"{name} copies nothing"
    for args in copies:
        words = [w for w in _words(args) if not w.startswith("--")]
        assert len(words) >= 2, args
        for source in words[:-1]:
            assert (REPO / source).exists(), f"{name}: COPY source {source!r} not in the repo"
        # pyproject.toml names README.md as the readme: a build without it fails
        if "pyproject.toml" in words[:-1]:
            assert "README.md" in words[:-1]


def test_the_training_image_runs_the_declared_console_script():
    steps = instructions(REPO / "docker" / "Dockerfile.train")
    entrypoints = [args for kw, args in steps if kw == "ENTRYPOINT"]
    assert len(entrypoints) == 1 and entrypoints[0].startswith("["), "exec-form ENTRYPOINT"
    command = json.loads(entrypoints[0])
    scripts = _scripts()
    assert command[0] in scripts, f"{command[0]} is not a [project.scripts] entry"
    module, _, func = scripts[command[0]].partition(":")
    imported = __import__(module, fromlist=[func])
    assert callable(getattr(imported, func))
    assert any(kw == "RUN" and "pip install" in args and "[torch]" in args for kw, args in steps)


def test_the_worker_image_matches_the_prefect_pin():
    steps = instructions(REPO / "docker" / "Dockerfile.worker")
    base = next(args for kw, args in steps if kw == "FROM")
    pinned = re.search(r"prefect==([\d.]+)", (REPO / "pyproject.toml").read_text())
    assert pinned and base == f"prefecthq/prefect:{pinned.group(1)}-python3.11"
    cmd = json.loads(next(args for kw, args in steps if kw == "CMD"))
    assert cmd[:3] == ["prefect", "worker", "start"]
    assert cmd[cmd.index("--pool") + 1] == "streamguard-sagemaker"
    assert 'pip install ".[${EXTRAS}]"' in dict(steps)["RUN"]
    assert "orchestration,aws" in dict(steps)["ARG"]


def _makefile_torch() -> str:
    found = re.search(r"^TORCH_VERSION\s*\??=\s*(\S+)\s*$", (REPO / "Makefile").read_text(), re.M)
    assert found, "the Makefile no longer pins TORCH_VERSION"
    return found.group(1)


def test_the_training_image_installs_the_torch_the_makefile_pins():
    steps = instructions(REPO / "docker" / "Dockerfile.train")
    args = dict(
        a.split("=", 1) for kw, a in steps if kw == "ARG" and a.startswith("TORCH_VERSION=")
    )
    assert args.get("TORCH_VERSION") == _makefile_torch(), (
        f"docker/Dockerfile.train installs torch {args.get('TORCH_VERSION')}, the Makefile pins "
        f"{_makefile_torch()}: change both together"
    )
    runs = [a for kw, a in steps if kw == "RUN"]
    install = next(a for a in runs if "pip install" in a)
    # installed pinned, before the project (whose torch>=2.4 then keeps it), and checked
    assert install.index('pip install "torch==${TORCH_VERSION}"') < install.index('".[torch]"')
    assert "torch.__version__" in install and "${TORCH_VERSION}" in install.split("assert")[1]
    # no base image brings a torch of its own that could win over the pinned one
    base = next(a for kw, a in steps if kw == "ARG" and a.startswith("BASE_IMAGE="))
    assert "pytorch" not in base.lower()
