"""Security test fixtures: tiny real detectors of every kind, trained once per session."""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from streamguard_core.config import GNNConfig, TrainConfig, TrainJobSpec, TransformerConfig

# the collectors' scripted 127.0.0.1 server, its recorded sleeps, and no egress (autouse)
from tests.core.collect.conftest import fault_server, no_egress, sleeps  # noqa: F401

TINY = {
    "gnn": GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4),
    "transformer": TransformerConfig(hidden_size=16, num_layers=2),
}


class MarkerPayload:
    """Unpickling this runs ``os.system("touch <marker>")``: what a hostile pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., int], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def malicious_pickle(marker: Path) -> bytes:
    """A real pickle that creates ``marker`` when loaded."""
    return pickle.dumps(MarkerPayload(marker))


@pytest.fixture(scope="session")
def trusted_models(make_processed, tmp_path_factory) -> dict[str, Path]:
    """Model directories of a baseline, a GNN and a transformer (1 epoch, tiny), and a fusion
    model over the baseline and the GNN (its combiner saved untrained)."""
    from streamguard_core.config import FusionConfig
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.models.baseline import BaselineDetector
    from streamguard_core.models.fusion import FusionNet, save_fusion
    from streamguard_core.training.job import run_job

    root = tmp_path_factory.mktemp("trusted")
    records = generate_synthetic(pairs_per_cwe=4, seed=3)
    baseline = BaselineDetector()
    baseline.fit([r.func for r in records], [r.label for r in records])
    models = {"baseline": baseline.save(root / "baseline")}
    data = make_processed(pairs=5, vocab_size=400, max_seq_len=96)
    for kind, cfg in TINY.items():
        spec = TrainJobSpec(model=cfg, seed=7, data_dir=str(data), run_dir=str(root / kind),
                            train=TrainConfig(epochs=1, batch_size=8, num_threads=1))  # fmt: skip
        status = run_job(spec)
        assert status.status == "completed", status.error
        models[kind] = root / kind / "model"
    bases = {"baseline": models["baseline"], "gnn": models["gnn"]}
    fusion_cfg = FusionConfig()
    models["fusion"] = save_fusion(
        FusionNet(2, fusion_cfg.hidden_dim), fusion_cfg, root / "fusion", {"threshold": 0.5}, bases
    )
    return models


@pytest.fixture
def model_copy(trusted_models, tmp_path) -> Callable[[str], Path]:
    """``model_copy(kind)``: a private copy of a trusted model directory, to tamper with."""

    def copy(kind: str) -> Path:
        return Path(shutil.copytree(trusted_models[kind], tmp_path / f"untrusted_{kind}"))

    return copy
