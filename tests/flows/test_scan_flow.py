"""The ``scan-repository`` flow under a real ephemeral Prefect server: a git change in a real
repository scored by a registry's production model (a baseline trained in the test), the SARIF,
JSON Lines and summary files written, the top findings as a table artifact, and ``fail_on``
failing the run only after the files and artifacts exist."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from streamguard_core.config import ScanConfig, ScanRepositoryConfig
from streamguard_core.data.synthetic import generate_synthetic
from streamguard_core.io import read_jsonl
from streamguard_core.models.baseline import BaselineDetector
from streamguard_core.pipeline.registry import ModelRegistry

SAFE = "int add(int a, int b)\n{\n    return a + b;\n}\n"
RISKY = """\
int copy_name(char *dst, const char *src)
{
    char buf[16];
    strcpy(buf, src);
    memcpy(dst, buf, strlen(src));
    return 0;
}
"""


GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin", "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}  # fmt: skip


def git(repo: Path, *args: str) -> None:
    env = {**GIT_ENV, "HOME": str(repo)}
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A registry whose production model is a baseline trained on synthetic pairs."""
    records = generate_synthetic(pairs_per_cwe=4, seed=3)
    det = BaselineDetector()
    det.fit([r.func for r in records], [r.label for r in records])
    model = det.save(tmp_path / "baseline")
    root = tmp_path / "registry"
    reg = ModelRegistry(root)
    version = reg.register(model, model="baseline", seed=3, metrics={}, source_run="test")
    reg.promote(version, reason="test")
    return root


def test_scan_repository_writes_sarif_artifacts_and_gates(
    prefect_harness, tmp_path: Path, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    from flows.scan import scan_repository

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "project"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "math.c").write_text(SAFE)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "src" / "copy.c").write_text("#include <string.h>\n\n" + RISKY)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "second")

    config = ScanRepositoryConfig(
        paths=[], git_diff="HEAD~1..HEAD", repo=str(repo), registry=str(registry),
        output_dir=str(tmp_path / "scans"), threshold=0.0, scan=ScanConfig(use_onnx=False),
    )  # fmt: skip
    summary = scan_repository(config)
    # only the function the change added is scored, and (threshold 0) flagged
    assert summary["functions"] == 1 and summary["flagged"] == 1
    (finding,) = summary["top_findings"]
    assert finding["function"] == "copy_name" and finding["start_line"] == 3
    assert finding["lines"] and all(3 <= x["line"] <= 9 for x in finding["lines"])
    sarif = json.loads(Path(summary["sarif"]).read_text())
    (result,) = sarif["runs"][0]["results"]
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "src/copy.c"
    assert location["region"]["startLine"] == 3
    rows = list(read_jsonl(summary["findings_file"]))
    assert rows[-1]["summary"]["functions"] == 1
    run_dir = Path(summary["sarif"]).parent
    assert run_dir.parent == tmp_path / "scans"
    assert json.loads((run_dir / "scan_summary.json").read_text())["flagged"] == 1

    # the gate: the run fails, naming the function, but the files and artifacts are written
    gated = config.model_copy(update={"fail_on": 0.0})
    state = scan_repository(gated, return_state=True)
    assert state.is_failed() and "copy_name" in state.message

    import asyncio

    async def artifacts() -> list:
        async with get_client() as client:
            return await client.read_artifacts()

    run_id = state.state_details.flow_run_id
    found = {a.key: a for a in asyncio.run(artifacts()) if a.flow_run_id == run_id}
    table = found["scan-top-findings"]
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert data[0]["function"] == "copy_name" and data[0]["location"].endswith("copy.c:3-9")
    assert "gate at 0.0: **FAILED**" in found["scan-summary"].data
    failed_runs = [p for p in (tmp_path / "scans").iterdir() if p != run_dir]
    assert len(failed_runs) == 1 and (failed_runs[0] / "results.sarif").exists()
