"""Explainer test fixtures: the planted-``strcpy`` data set and tiny models trained on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from _explain_testkit import planted_dataset, train_tiny

from streamguard_core.config import GNNConfig, TransformerConfig


@pytest.fixture(scope="session")
def planted_processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A processed data set of planted functions (real BPE tokenizer and graphs)."""
    return planted_dataset(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="session")
def tiny_gnn_dir(planted_processed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer hidden-8 GCN trained 60 steps on the planted data, saved as a detector."""
    out = tmp_path_factory.mktemp("tiny_gnn") / "model"
    cfg = GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4)
    return train_tiny(cfg, planted_processed, out, steps=60, lr=1e-2)


@pytest.fixture(scope="session")
def tiny_transformer_dir(planted_processed: Path, tmp_path_factory: pytest.TempPathFactory
                         ) -> Path:  # fmt: skip
    """A 2-layer hidden-16 RoBERTa trained 80 steps on the planted data, saved as a detector."""
    out = tmp_path_factory.mktemp("tiny_transformer") / "model"
    cfg = TransformerConfig(hidden_size=16, num_layers=2)
    return train_tiny(cfg, planted_processed, out, steps=80, lr=2e-3)
