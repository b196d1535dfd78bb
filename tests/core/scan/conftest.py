"""Scan test fixtures: no egress, and no enclosing git work tree above a test's tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_egress(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # a plain directory under tmp_path must never be taken for part of an enclosing work tree
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
