"""Tiny real detectors for the ONNX tests, trained once per session through ``run_job``."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from streamguard_core.config import GNNConfig, TrainConfig, TrainJobSpec, TransformerConfig

TINY_MODELS = {
    "gcn": GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4),
    "rgcn": GNNConfig(arch="rgcn", hidden_dim=8, num_layers=2, node_token_dim=4),
    "transformer": TransformerConfig(hidden_size=16, num_layers=2),
}
DEVIGN_FUNCTIONS = 64


def _spread_transformer(model_dir: Path) -> None:
    """Re-draw the tiny transformer's matrices at std 0.3 (seeded).

    One epoch on 60 synthetic functions leaves it predicting 0.504 for everything (std 1e-6
    over functions), and a parity check between two near-constant outputs proves nothing; with
    these weights its probabilities differ from function to function by ~1e-2, so a graph
    that mishandled padding or the mask would show. The architecture, files and preprocessing
    stay those the training wrote.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(str(model_dir))


@pytest.fixture(scope="session")
def tiny_model(make_processed, tmp_path_factory) -> Callable[[str], Path]:
    """``tiny_model(name)``: the model directory of a 1-epoch tiny model (trained once)."""
    from streamguard_core.training.job import run_job

    data = make_processed(pairs=5, vocab_size=400, max_seq_len=96)
    trained: dict[str, Path] = {}

    def train(name: str) -> Path:
        if name not in trained:
            run_dir = tmp_path_factory.mktemp(f"tiny_{name}")
            spec = TrainJobSpec(model=TINY_MODELS[name], seed=7, data_dir=str(data),
                                train=TrainConfig(epochs=1, batch_size=8, num_threads=1),
                                run_dir=str(run_dir))  # fmt: skip
            status = run_job(spec)
            assert status.status == "completed", status.error
            if name == "transformer":
                _spread_transformer(run_dir / "model")
            trained[name] = run_dir / "model"
        return trained[name]

    return train


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Callable[[str], Path]:
    """``model_copy(name)``: a private copy of a tiny model directory (mtimes kept)."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(tiny_model(name), tmp_path / name))

    return copy


@pytest.fixture(scope="session")
def baseline_dir(tmp_path_factory) -> Path:
    """A TF-IDF baseline fitted on a few synthetic pairs."""
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.models.baseline import BaselineDetector

    records = generate_synthetic(pairs_per_cwe=4, seed=3)
    detector = BaselineDetector()
    detector.fit([r.func for r in records], [r.label for r in records])
    return detector.save(tmp_path_factory.mktemp("baseline") / "baseline")


@pytest.fixture(scope="session")
def devign_functions(shared_data) -> list[str]:
    """The first 64 functions of Devign valid (skips when ../shared/data is absent)."""
    from streamguard_core.data.loaders import iter_records

    rows = iter_records(shared_data / "devign_valid.jsonl.gz")
    funcs = (r.func for r in rows if hasattr(r, "func"))
    return list(itertools.islice(funcs, DEVIGN_FUNCTIONS))
