"""The relational GCN (arch rgcn): one hand-computed layer, edge types used, learning, save/load
directly and through the GNN adapter on a real processed data set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from streamguard_core.config import GNNConfig
from streamguard_core.models.adapters import adapter_for
from streamguard_core.models.gnn import (
    GNNClassifier,
    RelationalGraphConv,
    build_gnn,
    load_gnn,
    save_gnn,
)
from streamguard_core.preprocess.dataset import ProcessedSplit, graph_dataset
from streamguard_core.preprocess.parse import EDGE_TYPES, node_type_vocab
from streamguard_core.training.loop import Batches

NUM_TYPES = len(node_type_vocab())
T = len(EDGE_TYPES)


def tiny(**kw) -> GNNConfig:
    return GNNConfig(arch="rgcn", hidden_dim=16, num_layers=2, node_token_dim=8, **kw)


@pytest.fixture(scope="module")
def processed(make_processed) -> Path:
    return make_processed(pairs=3, vocab_size=300, max_seq_len=64)


@pytest.fixture(scope="module")
def train_graphs(processed):
    return graph_dataset(processed, "train")


def hand_graph() -> dict[str, torch.Tensor]:
    """5 nodes, one graph: a root, two children, a grandchild, and a data-flow edge."""
    return {
        "x": torch.tensor([3, 10, 11, 12, 13]),
        "node_token": torch.tensor([0, 5, 0, 77, 5]),
        "edge_index": torch.tensor([[0, 0, 1, 1, 2, 1], [1, 2, 3, 2, 4, 4]]),
        "edge_type": torch.tensor([0, 0, 0, 1, 0, 3]),
    }


def test_one_layer_matches_the_formula_by_hand():
    torch.manual_seed(0)
    conv = RelationalGraphConv(dim=2, num_relations=2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [3.0, 0.0]]]))
        conv.root.weight.copy_(torch.eye(2))
        conv.root.bias.zero_()
    h = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    # node 2 gets nodes 0 and 1 through relation 0 (mean), and node 0 through relation 1
    edge_index = torch.tensor([[0, 1, 0], [2, 2, 2]])
    relation = torch.tensor([0, 0, 1])
    out = conv(h, edge_index, relation)
    mean_r0 = (h[0] + h[1]) / 2  # identity weight
    through_r1 = h[0] @ conv.weight[1].detach()  # [1, 2] @ [[0, 2], [3, 0]] = [6, 2]
    assert torch.allclose(out[2], h[2] + mean_r0 + through_r1)
    assert torch.allclose(out[:2], h[:2])  # no incoming edges: the self weight only
    assert torch.allclose(conv(h, edge_index[:, :0], relation[:0]), h)


def test_forward_backward_and_parameter_count():
    torch.manual_seed(0)
    model = build_gnn(tiny(dropout=0.0), NUM_TYPES)
    g = hand_graph()
    logits = model(g["x"], g["node_token"], g["edge_index"], None, edge_type=g["edge_type"])
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([1])).backward()
    for conv in model.relational_convs:
        grad = conv.weight.grad
        assert grad is not None and grad.shape == (2 * T, 16, 16)
        # only relations present in the graph (types 0, 1, 3, both directions) learn anything
        used = {0, 1, 3} | {T + t for t in (0, 1, 3)}
        assert {r for r in range(2 * T) if grad[r].abs().sum() > 0} == used
    h, tok = 16, 8
    expected = (
        NUM_TYPES * h
        + model.cfg.node_token_buckets * tok
        + (h + tok) * h
        + h  # input projection
        + 2 * (2 * T * h * h + h * h + h)  # relational layers: per-relation and self weights
        + (2 * h * h + h)
        + (h * 2 + 2)  # head
    )
    assert model.num_parameters() == expected


def test_edge_types_change_the_output_and_are_required():
    torch.manual_seed(0)
    rgcn = build_gnn(tiny(), NUM_TYPES).eval()
    torch.manual_seed(0)
    gcn = build_gnn(tiny().model_copy(update={"arch": "gcn"}), NUM_TYPES).eval()
    g = hand_graph()
    other = torch.tensor([1, 2, 0, 0, 4, 0])  # same edges, other types
    with torch.no_grad():
        a = rgcn(g["x"], g["node_token"], g["edge_index"], None, edge_type=g["edge_type"])
        b = rgcn(g["x"], g["node_token"], g["edge_index"], None, edge_type=other)
        c = gcn(g["x"], g["node_token"], g["edge_index"], None, edge_type=g["edge_type"])
        d = gcn(g["x"], g["node_token"], g["edge_index"], None, edge_type=other)
    assert not torch.allclose(a, b)
    assert torch.equal(c, d)  # the control: GCN reads every edge alike
    with pytest.raises(ValueError, match="needs edge_type"):
        rgcn(g["x"], g["node_token"], g["edge_index"], None)
    with pytest.raises(ValueError, match=r"edge type ids must be in \[0, 5\)"):
        rgcn(g["x"], g["node_token"], g["edge_index"], None, edge_type=g["edge_type"] + T)


def test_overfits_sixteen_real_graphs(train_graphs):
    torch.manual_seed(0)
    model = build_gnn(tiny(dropout=0.0), NUM_TYPES)
    batch = next(iter(DataLoader(train_graphs[:16], batch_size=16, shuffle=False)))
    assert 0 < int(batch.y.sum()) < 16 and batch.edge_type.numel() == batch.edge_index.size(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.forward_data(batch), batch.y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_save_load_round_trip(train_graphs, tmp_path):
    torch.manual_seed(1)
    cfg = tiny()
    model = build_gnn(cfg, NUM_TYPES, num_edge_types=4).eval()
    batch = next(iter(DataLoader(train_graphs, batch_size=6)))
    save_gnn(model, cfg, NUM_TYPES, tmp_path)
    meta = json.loads((tmp_path / "gnn_config.json").read_text())
    assert (meta["config"]["arch"], meta["num_edge_types"]) == ("rgcn", 4)
    again = load_gnn(tmp_path)
    assert isinstance(again, GNNClassifier) and not again.training
    assert again.num_edge_types == 4
    with torch.no_grad():
        assert torch.equal(model.forward_data(batch), again.forward_data(batch))


def test_through_the_adapter_on_processed_data(processed, tmp_path):
    adapter = adapter_for("gnn")
    torch.manual_seed(0)
    model, pad_id = adapter.build(tiny(), processed)
    assert isinstance(model, GNNClassifier) and model.num_edge_types == T
    batches = Batches(ProcessedSplit(processed, "valid"), "gnn", pad_id)
    batch = batches.make(np.arange(min(5, len(batches))), torch.device("cpu"))
    assert batch["edge_type"].shape == (batch["edge_index"].size(1),)
    model.eval()
    with torch.no_grad():
        logits = adapter.forward(model, batch)
        assert logits.shape == (min(5, len(batches)), 2)
        shuffled = dict(batch, edge_type=batch["edge_type"].flip(0))
        assert not torch.allclose(logits, adapter.forward(model, shuffled))
    out = tmp_path / "model"
    out.mkdir()
    adapter.save(model, tiny(), processed, out)
    loaded, _ = adapter.load(out, torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(logits, adapter.forward(loaded, batch))


def test_data_with_unknown_edge_types_is_refused(processed, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    types = json.loads((processed / "node_types.json").read_text())
    types["edge_types"] = ["ast", "control_flow"]
    (data / "node_types.json").write_text(json.dumps(types))
    with pytest.raises(ValueError, match="preprocess the data again"):
        adapter_for("gnn").build(tiny(), data)
