"""Security test fixtures: tiny real detectors of every kind (trained once per session, in
tests/conftest.py), a fusion model over two of them, and a hostile pickle."""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

# the collectors' scripted 127.0.0.1 server, its recorded sleeps, and no egress (autouse)
from tests.core.collect.conftest import fault_server, no_egress, sleeps  # noqa: F401


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
def trusted_models(tiny_model, baseline_dir, tmp_path_factory) -> dict[str, Path]:
    """Model directories of a baseline, a GNN and a transformer (the session's tiny models of
    tests/conftest.py), and a fusion model over the baseline and the GNN (its combiner saved
    untrained)."""
    from streamguard_core.config import FusionConfig
    from streamguard_core.models.fusion import FusionNet, save_fusion

    models = {
        "baseline": baseline_dir,
        "gnn": tiny_model("gcn"),
        "transformer": tiny_model("transformer"),
    }
    bases = {"baseline": models["baseline"], "gnn": models["gnn"]}
    fusion_cfg = FusionConfig()
    models["fusion"] = save_fusion(
        FusionNet(2, fusion_cfg.hidden_dim),
        fusion_cfg,
        tmp_path_factory.mktemp("trusted") / "fusion",
        {"threshold": 0.5},
        bases,
    )
    return models


@pytest.fixture
def model_copy(trusted_models, tmp_path) -> Callable[[str], Path]:
    """``model_copy(kind)``: a private copy of a trusted model directory, to tamper with."""

    def copy(kind: str) -> Path:
        return Path(shutil.copytree(trusted_models[kind], tmp_path / f"untrusted_{kind}"))

    return copy
