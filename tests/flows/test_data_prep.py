"""The data-prep flow under a real (ephemeral) Prefect server, and prefect.yaml's entrypoints."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from streamguard_core.config import DataConfig, PreprocessConfig

REPO = Path(__file__).resolve().parents[2]


def test_data_prep_flow_publishes_artifacts(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.data_prep import data_prep

    out = tmp_path / "data"
    summary = data_prep(
        DataConfig(synthetic_pairs_per_cwe=4),
        PreprocessConfig(workers=1, vocab_size=400),
        str(out),
    )
    c = summary["counts"]
    assert c["read"] == c["kept"] + c["rejected"] + c["deduplicated"] == 13 * 2 * 4
    assert (out / "preprocessing_metadata.json").exists()

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["data-summary"]))
        )
    assert artifacts and "AST success rate" in artifacts[0].data


def test_preprocess_task_body_directly(tmp_path):
    from tasks.data import preprocess_task

    summary = preprocess_task.fn(
        DataConfig(synthetic_pairs_per_cwe=2),
        PreprocessConfig(workers=1, vocab_size=300),
        str(tmp_path),
    )
    assert summary["output_dir"] == str(tmp_path)
    assert summary["counts"]["kept"] > 0 and summary["gnn_batch_size"] >= 1


def test_prefect_yaml_entrypoints_exist():
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert config["deployments"], "prefect.yaml declares no deployment"
    for deployment in config["deployments"]:
        path, func = deployment["entrypoint"].split(":")
        assert (REPO / path).exists(), path
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, func))
        assert deployment["work_pool"]["name"]
