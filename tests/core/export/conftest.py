"""ONNX test fixtures: private copies of the session's tiny detectors (``tiny_model`` and
``baseline_dir`` in tests/conftest.py), and real Devign functions."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

DEVIGN_FUNCTIONS = 64


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Callable[[str], Path]:
    """``model_copy(name)``: a private copy of a tiny model directory (mtimes kept)."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(tiny_model(name), tmp_path / name))

    return copy


@pytest.fixture(scope="session")
def devign_functions(shared_data) -> list[str]:
    """The first 64 functions of Devign valid (skips when ../shared/data is absent)."""
    from streamguard_core.data.loaders import iter_records

    rows = iter_records(shared_data / "devign_valid.jsonl.gz")
    funcs = (r.func for r in rows if hasattr(r, "func"))
    return list(itertools.islice(funcs, DEVIGN_FUNCTIONS))
