"""Shared fixtures: the real data folder, offline Hugging Face, tiny functions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No hub calls from tests (a hub lookup otherwise hangs ~23 s here) and no egress.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
# One torch CPU thread (set before anything imports torch; child processes inherit it). The
# test models are tiny, and on a busy 2-core machine torch's spinning worker threads made a
# 60-step GNN test take 20 s instead of 1 s. Export OMP_NUM_THREADS to choose otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason when it is absent."""
    if not (SHARED_DATA / "devign_valid.jsonl.gz").exists():
        pytest.skip(f"real data not present at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def make_processed(tmp_path_factory):
    """Build (once per settings) a small real processed data set from the synthetic generator."""
    from streamguard_core.config import DataConfig, PreprocessConfig
    from streamguard_core.preprocess.run import preprocess

    built: dict[tuple[int, int, int], Path] = {}

    def build(pairs: int, vocab_size: int, max_seq_len: int) -> Path:
        key = (pairs, vocab_size, max_seq_len)
        if key not in built:
            out = tmp_path_factory.mktemp(f"processed_{pairs}_{vocab_size}_{max_seq_len}")
            preprocess(
                DataConfig(synthetic_pairs_per_cwe=pairs),
                PreprocessConfig(workers=1, vocab_size=vocab_size, max_seq_len=max_seq_len),
                out,
                show_progress=False,
            )
            built[key] = out
        return built[key]

    return build


@pytest.fixture(scope="session")
def baseline_dir(tmp_path_factory) -> Path:
    """A TF-IDF baseline detector fitted on a few synthetic pairs, saved once (threshold 0.5)."""
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.models.baseline import BaselineDetector

    records = generate_synthetic(pairs_per_cwe=4, seed=3)
    detector = BaselineDetector()
    detector.fit([r.func for r in records], [r.label for r in records])
    return detector.save(tmp_path_factory.mktemp("baseline") / "baseline")


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
def tiny_model(make_processed, tmp_path_factory):
    """``tiny_model(name)``: the model directory of a 1-epoch tiny ``gcn``, ``rgcn`` (hidden 8,
    2 layers) or ``transformer`` (hidden 16, 2 layers, weights spread: see
    :func:`_spread_transformer`), trained once per session through ``run_job``. Shared by the
    export and security tests: copy it before changing anything in it."""
    from streamguard_core.config import GNNConfig, TrainConfig, TrainJobSpec, TransformerConfig
    from streamguard_core.training.job import run_job

    tiny_models = {
        "gcn": GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4),
        "rgcn": GNNConfig(arch="rgcn", hidden_dim=8, num_layers=2, node_token_dim=4),
        "transformer": TransformerConfig(hidden_size=16, num_layers=2),
    }
    data = make_processed(pairs=5, vocab_size=400, max_seq_len=96)
    trained: dict[str, Path] = {}

    def train(name: str) -> Path:
        if name not in trained:
            run_dir = tmp_path_factory.mktemp(f"tiny_{name}")
            spec = TrainJobSpec(model=tiny_models[name], seed=7, data_dir=str(data),
                                train=TrainConfig(epochs=1, batch_size=8, num_threads=1),
                                run_dir=str(run_dir))  # fmt: skip
            status = run_job(spec)
            assert status.status == "completed", status.error
            if name == "transformer":
                _spread_transformer(run_dir / "model")
            trained[name] = run_dir / "model"
        return trained[name]

    return train


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One Prefect test harness (ephemeral server, temporary database) for every flow test."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
