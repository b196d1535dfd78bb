"""GCN and GGNN graph classifiers on real preprocessed graphs: shapes, learning, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from torch_geometric.loader import DataLoader

from streamguard_core.models.gnn import (
    GNNClassifier,
    GNNConfig,
    build_gnn,
    load_gnn,
    save_gnn,
)
from streamguard_core.preprocess.dataset import graph_dataset
from streamguard_core.preprocess.parse import NODE_TOKEN_BUCKETS, node_type_vocab

NUM_TYPES = len(node_type_vocab())


def tiny(arch: str = "gcn", **kw) -> GNNConfig:
    return GNNConfig(arch=arch, hidden_dim=16, num_layers=2, node_token_dim=8, **kw)


@pytest.fixture(scope="module")
def processed(make_processed):
    return make_processed(pairs=3, vocab_size=300, max_seq_len=64)


@pytest.fixture(scope="module")
def train_graphs(processed):
    return graph_dataset(processed, "train")


@pytest.mark.parametrize("arch", ["gcn", "ggnn"])
def test_forward_on_a_real_batch(train_graphs, arch):
    torch.manual_seed(0)
    model = build_gnn(tiny(arch), NUM_TYPES)
    batch = next(iter(DataLoader(train_graphs, batch_size=8, shuffle=False)))
    logits = model(batch.x, batch.node_token, batch.edge_index, batch.batch)
    assert logits.shape == (batch.num_graphs, 2) == (8, 2)
    assert torch.isfinite(logits).all()
    # the convenience entry point agrees, and the (ignored) edge types are accepted
    model.eval()
    with torch.no_grad():
        a = model.forward_data(batch)
        b = model(
            batch.x, batch.node_token, batch.edge_index, batch.batch, edge_type=batch.edge_type
        )
    assert torch.equal(a, b)


def test_defaults_and_parameter_count():
    cfg = GNNConfig()
    assert (cfg.arch, cfg.hidden_dim, cfg.num_layers, cfg.node_token_dim) == ("gcn", 256, 4, 64)
    assert cfg.node_token_buckets == NODE_TOKEN_BUCKETS
    model = build_gnn(cfg, NUM_TYPES)
    h, t = 256, 64
    expected = (
        NUM_TYPES * h
        + NODE_TOKEN_BUCKETS * t
        + (h + t) * h
        + h  # input projection
        + 4 * (h * h + h)  # GCN layers
        + (2 * h * h + h)
        + (h * 2 + 2)  # head
    )
    assert model.num_parameters() == expected
    with pytest.raises(ValueError):
        GNNConfig(bogus=1)
    with pytest.warns(UserWarning, match="edge types"):
        build_gnn(GNNConfig(use_edge_types=True, hidden_dim=8, num_layers=1), NUM_TYPES)


@pytest.mark.parametrize("arch", ["gcn", "ggnn"])
def test_hand_built_graph_and_single_graph_batch(arch):
    torch.manual_seed(0)
    model = build_gnn(tiny(arch), NUM_TYPES).eval()
    x = torch.tensor([3, 10, 11, 12])
    node_token = torch.tensor([0, 5, 0, 77])
    edge_index = torch.tensor([[0, 0, 1, 2], [1, 2, 3, 3]])
    with torch.no_grad():
        one = model(x, node_token, edge_index, None)
        also = model(x, node_token, edge_index, torch.zeros(4, dtype=torch.long))
    assert one.shape == (1, 2) and torch.isfinite(one).all()
    assert torch.allclose(one, also)
    # an isolated node and a trailing empty graph are fine
    with torch.no_grad():
        two = model(
            torch.tensor([3, 10, 11, 12, 4]),
            None,
            edge_index,
            torch.tensor([0, 0, 0, 0, 1]),
            num_graphs=3,
        )
    assert two.shape == (3, 2) and torch.isfinite(two).all()


def test_deterministic_init():
    torch.manual_seed(7)
    a = build_gnn(tiny("ggnn"), NUM_TYPES)
    torch.manual_seed(7)
    b = build_gnn(tiny("ggnn"), NUM_TYPES)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    assert torch.count_nonzero(a.node_token_embedding.weight[0]) == 0  # padding row


@pytest.mark.parametrize("arch", ["gcn", "ggnn"])
def test_overfits_sixteen_graphs(train_graphs, arch):
    torch.manual_seed(0)
    model = build_gnn(tiny(arch, dropout=0.0), NUM_TYPES)
    batch = next(iter(DataLoader(train_graphs[:16], batch_size=16, shuffle=False)))
    assert 0 < int(batch.y.sum()) < 16
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.forward_data(batch), batch.y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize("arch", ["gcn", "ggnn"])
def test_save_load_round_trip(train_graphs, tmp_path, arch):
    torch.manual_seed(1)
    cfg = tiny(arch)
    model = build_gnn(cfg, NUM_TYPES).eval()
    batch = next(iter(DataLoader(train_graphs, batch_size=6)))
    weights = save_gnn(model, cfg, NUM_TYPES, tmp_path / "gnn")
    assert weights.name == "model.safetensors"
    meta = json.loads((tmp_path / "gnn" / "gnn_config.json").read_text())
    assert meta["num_node_types"] == NUM_TYPES and meta["config"]["arch"] == arch
    again = load_gnn(tmp_path / "gnn")
    assert isinstance(again, GNNClassifier) and not again.training
    with torch.no_grad():
        assert torch.equal(model.forward_data(batch), again.forward_data(batch))


def test_torch_fallback_format_loads(train_graphs, tmp_path, monkeypatch):
    import streamguard_core.models.gnn as gnn_module

    monkeypatch.setattr(gnn_module, "_have_safetensors", lambda: False)
    cfg = tiny("gcn")
    model = build_gnn(cfg, NUM_TYPES).eval()
    assert save_gnn(model, cfg, NUM_TYPES, tmp_path).name == "model.pt"
    batch = next(iter(DataLoader(train_graphs, batch_size=4)))
    with torch.no_grad():
        assert torch.equal(model.forward_data(batch), load_gnn(tmp_path).forward_data(batch))
    with pytest.raises(FileNotFoundError):
        load_gnn(tmp_path / "nowhere")


def test_node_token_dim_zero(train_graphs):
    torch.manual_seed(0)
    model = build_gnn(GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=0), NUM_TYPES)
    assert model.node_token_embedding is None and model.input_projection is None
    batch = next(iter(DataLoader(train_graphs, batch_size=4)))
    logits = model(batch.x, batch.node_token, batch.edge_index, batch.batch)
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    assert model.num_parameters() < 10_000  # no 16k-row bucket table
